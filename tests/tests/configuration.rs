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
    let http = |url: &str| {
        format!("[handlers.crm]\ntype = \"http\"\nurl = \"{url}\"\nsecret_env = \"CRM_SECRET\"\n")
    };
    // (the routes file, what the error names)
    let cases = [
        (env.dir.join("nope.toml").display().to_string(), "nope.toml"),
        (
            env.write_file("a.toml", "[[route]]\nhandlers = [\"crm\"]\n"),
            "`crm`",
        ),
        (
            env.write_file("b.toml", &http("http://crm.example.com/h")),
            "https",
        ),
        (
            env.write_file("c.toml", &http("https://127.0.0.1/h")),
            "loopback",
        ),
    ];
    for (routes, names) in cases {
        let out = run(routes).await;
        assert!(
            !out.success && out.stderr.contains(names),
            "{names}: {out:?}"
        );
        assert!(!out.stderr.contains("panicked"), "{out:?}");
    }
}
