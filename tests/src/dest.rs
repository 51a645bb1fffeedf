//! A local HTTP receiver for the worker's `http` handler: answers from a script (then a
//! default), records every request, and can hang forever (to stall a worker).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    /// A status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// A JSON body with this status (e.g. a JWKS document).
    Json(u16, String),
    /// 200 after a pause (a slow destination).
    Slow(std::time::Duration),
    /// Never answers.
    Hang,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("destination got JSON")
    }
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    received: Mutex<Vec<Request>>,
}

pub struct Destination {
    pub url: String,
    state: Arc<State>,
    handle: actix_web::dev::ServerHandle,
}

impl Destination {
    /// Listens on 127.0.0.1 (port chosen by the OS); answers 200 until told otherwise.
    pub fn start() -> Self {
        let state = Arc::new(State::default());
        let data = web::Data::from(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind destination");
        let port = listener.local_addr().expect("local addr").port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hooks"),
            state,
            handle,
        }
    }

    /// The next answers, in order; after them, the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state
            .script
            .lock()
            .expect("script lock")
            .extend(replies);
    }

    /// The answer once the script is used up (200 unless set).
    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().expect("default lock") = Some(reply);
    }

    pub fn received(&self) -> Vec<Request> {
        self.state.received.lock().expect("received lock").clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().expect("received lock").len()
    }

    /// Writes `env`'s routes file and returns its path: GitHub events (of `module`, if given) go
    /// through `handlers`, where `dest` is an `http` handler posting here (with `query` after the
    /// path), signed with `DEST_SECRET` (set to `sign::whsec(9)`), up to `max_attempts`
    /// attempts 200 ms apart.
    pub fn routes(
        &self,
        env: &crate::TestEnv,
        module: Option<&str>,
        handlers: &[&str],
        query: &str,
        max_attempts: u32,
    ) -> String {
        env.set("DEST_SECRET", &crate::sign::whsec(9));
        let module = module.map_or(String::new(), |m| format!("module = \"{m}\"\n"));
        let handlers = handlers
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ");
        env.write_file(
            "routes.toml",
            &format!(
                r#"
[[route]]
provider = "github"
{module}handlers = [{handlers}]

[handlers.dest]
type = "http"
url = "{url}{query}"
secret_env = "DEST_SECRET"
allow_hosts = ["127.0.0.1"]
timeout = "60s"
retry = {{ max_attempts = {max_attempts}, schedule = ["200ms"] }}
"#,
                url = self.url
            ),
        )
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    state.received.lock().expect("received lock").push(Request {
        headers,
        body: body.to_vec(),
        at: Instant::now(),
    });
    let reply = state.script.lock().expect("script lock").pop_front();
    let reply = reply
        .or_else(|| state.default.lock().expect("default lock").clone())
        .unwrap_or(Reply::Status(200));
    let status = |code: u16| {
        actix_web::http::StatusCode::from_u16(code).expect("a valid status in the test script")
    };
    match reply {
        Reply::Status(code) => HttpResponse::build(status(code)).finish(),
        Reply::RetryAfter(code, secs) => HttpResponse::build(status(code))
            .insert_header(("Retry-After", secs.to_string()))
            .finish(),
        Reply::Json(code, body) => HttpResponse::build(status(code))
            .content_type("application/json")
            .body(body),
        Reply::Slow(pause) => {
            tokio::time::sleep(pause).await;
            HttpResponse::Ok().finish()
        }
        Reply::Hang => std::future::pending().await,
    }
}
