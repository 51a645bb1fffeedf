//! Verification, provider by provider, in process: one row per provider, each request signed by
//! the provider's own signer (`hookline_shared::providers::<name>::sign`) and checked by its
//! verifier as the ingress builds it. Every failure names its provider. The wire (status codes,
//! the queue, duplicates) is `providers.rs`'s, through the real ingress.

use std::time::{Duration, SystemTime};

use hookline_shared::providers::testkit::Request;
use hookline_shared::providers::{
    Disposition, ProviderKind, Verified, VerifyError, body_hash_key, build_verifier,
};
use hookline_tests::examples::{Dedup, Row, rows};

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Verifies `req` with a verifier built for `row`'s source, as the ingress does (keys loaded
/// first where they live elsewhere).
async fn verify(row: &Row, req: &Request, now: SystemTime) -> Result<Verified, VerifyError> {
    let verifier = build_verifier(row.kind, row.source(), &row.options())
        .unwrap_or_else(|e| panic!("{}: the source does not build: {e}", row.kind));
    let headers = req.verifier_headers();
    let raw = req.raw(&headers);
    verifier.prefetch(&raw).await;
    verifier.verify(&raw, now)
}

/// The dedup key of a verified request: its own, its first part's, or the body's hash.
fn dedup_key(v: &Verified, body: &[u8]) -> String {
    match &v.disposition {
        Disposition::Split { parts, .. } => parts[0].dedup_key.clone(),
        _ => v.dedup_key.clone().unwrap_or_else(|| body_hash_key(body)),
    }
}

#[tokio::test]
async fn a_genuine_request_verifies_to_its_dedup_key() {
    let now = SystemTime::now();
    for row in rows() {
        let req = row.request("/webhooks/src", unix(now), true);
        let v = verify(&row, &req, now)
            .await
            .unwrap_or_else(|e| panic!("{}: a signed request is refused: {e}", row.kind));
        let key = dedup_key(&v, &req.body);
        match row.dedup {
            Dedup::Body => assert_eq!(key, body_hash_key(&req.body), "{}", row.kind),
            // Twilio's key hashes what it signed (URL and sorted parameters).
            Dedup::Is("twilio") => {
                let signed = "https://hooks.example.com/twMessageSidSM1MessageStatusdelivered";
                assert_eq!(key, body_hash_key(signed.as_bytes()), "{}", row.kind);
            }
            Dedup::Is(want) => assert_eq!(key, want, "{}", row.kind),
        }
    }
}

#[tokio::test]
async fn an_unsigned_request_is_refused() {
    let now = SystemTime::now();
    for row in rows() {
        let req = row.request("/webhooks/src", unix(now), false);
        let got = verify(&row, &req, now).await;
        assert!(got.is_err(), "{}: an unsigned request verified", row.kind);
    }
}

#[tokio::test]
async fn a_changed_byte_of_a_signed_body_is_refused() {
    let now = SystemTime::now();
    for row in rows().into_iter().filter(|r| r.body_signed) {
        let mut req = row.request("/webhooks/src", unix(now), true);
        let last = req.body.len() - 2;
        req.body[last] ^= 0x01;
        let got = verify(&row, &req, now).await;
        assert!(got.is_err(), "{}: a tampered body verified", row.kind);
    }
}

#[tokio::test]
async fn another_secret_is_refused() {
    let now = SystemTime::now();
    for row in rows()
        .into_iter()
        .filter(|r| r.kind != ProviderKind::GooglePubsub)
    {
        let other = Row {
            secret: "whsec_b3RoZXItc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZXM=",
            ..row
        };
        let req = other.request("/webhooks/src", unix(now), true);
        let got = verify(&row, &req, now).await;
        assert!(
            got.is_err(),
            "{}: signed with another secret, verified",
            row.kind
        );
    }
}

#[tokio::test]
async fn an_hour_old_request_is_stale_where_the_scheme_dates_it() {
    let now = SystemTime::now();
    let hour_ago = unix(now - Duration::from_secs(3600));
    for row in rows().into_iter().filter(|r| r.dated) {
        let req = row.request("/webhooks/src", hour_ago, true);
        let got = verify(&row, &req, now).await;
        assert_eq!(got.err(), Some(VerifyError::Stale), "{}", row.kind);
    }
}
