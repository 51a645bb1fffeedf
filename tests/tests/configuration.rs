//! Configuration: a binary started with a bad setting or routes file exits naming the setting
//! or the file at fault, never with a panic.

use hookline_tests::TestEnv;
use hookline_tests::env::run_binary;
use hookline_tests::sign;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_named_without_a_panic() {
    let env = TestEnv::new().await;
    let run = |env_vars: Vec<(&'static str, &'static str)>| {
        let vars = env.vars();
        async move { run_binary("hookline-ingress", &[], None, &vars, &env_vars).await }
    };
    let out = run(vec![("HOOKLINE_SECRET_KEY", "")]).await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("HOOKLINE_SECRET_KEY") && out.stderr.contains("keygen"),
        "{out:?}"
    );

    let out = run(vec![("HOOKLINE_SECRET_KEY", "c2hvcnQ=")]).await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("HOOKLINE_SECRET_KEY") && out.stderr.contains("32"),
        "{out:?}"
    );

    let out = run(vec![("HOOKLINE_PUBLISH_TIMEOUT", "soon")]).await;
    assert!(!out.success);
    assert!(out.stderr.contains("HOOKLINE_PUBLISH_TIMEOUT"), "{out:?}");

    let out = run(vec![("HOOKLINE_INGRESS_ADDR", "not-an-address")]).await;
    assert!(!out.success);
    assert!(out.stderr.contains("HOOKLINE_INGRESS_ADDR"), "{out:?}");

    let out = run(vec![("HOOKLINE_INGRESS_ADMIN_ADDR", "not-an-address")]).await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("HOOKLINE_INGRESS_ADMIN_ADDR"),
        "{out:?}"
    );

    for (name, value) in [
        ("HOOKLINE_BODY_TIMEOUT", "0s"),
        ("HOOKLINE_BODY_MIN_RATE", "slow"),
    ] {
        let out = run(vec![(name, value)]).await;
        assert!(!out.success && out.stderr.contains(name), "{out:?}");
    }

    let out = run(vec![("HOOKLINE_MAX_BODY_BYTES", "-1")]).await;
    assert!(!out.success);
    assert!(out.stderr.contains("HOOKLINE_MAX_BODY_BYTES"), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_refuses_bad_routes_and_unsafe_destinations_by_name() {
    let env = TestEnv::new().await;
    let vars = env.vars();
    let run = |routes: String| {
        let vars = vars.clone();
        async move {
            run_binary(
                "hookline-worker",
                &["run"],
                None,
                &vars,
                &[
                    ("HOOKLINE_ROUTES", &routes),
                    ("CRM_SECRET", &sign::whsec(1)),
                ],
            )
            .await
        }
    };
    let missing = run(env.dir.join("nope.toml").display().to_string()).await;
    assert!(
        !missing.success && missing.stderr.contains("nope.toml"),
        "{missing:?}"
    );

    let undefined = run(env.write_file("a.toml", "[[route]]\nhandlers = [\"crm\"]\n")).await;
    assert!(
        !undefined.success && undefined.stderr.contains("`crm`"),
        "{undefined:?}"
    );

    let plain_http = run(env.write_file(
        "b.toml",
        "[handlers.crm]\ntype = \"http\"\nurl = \"http://crm.example.com/h\"\nsecret_env = \"CRM_SECRET\"\n",
    ))
    .await;
    assert!(
        !plain_http.success && plain_http.stderr.contains("https"),
        "{plain_http:?}"
    );

    let loopback = run(env.write_file(
        "c.toml",
        "[handlers.crm]\ntype = \"http\"\nurl = \"https://127.0.0.1/h\"\nsecret_env = \"CRM_SECRET\"\n",
    ))
    .await;
    assert!(
        !loopback.success && loopback.stderr.contains("loopback"),
        "{loopback:?}"
    );
    for out in [&missing, &undefined, &plain_http, &loopback] {
        assert!(!out.stderr.contains("panicked"), "{out:?}");
    }
}
