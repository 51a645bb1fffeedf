//! Discord interactions endpoint: `X-Signature-Ed25519` (hex) is an Ed25519 signature of
//! `X-Signature-Timestamp` + body under the application's public key (hex, from the developer
//! portal), which is the source's "secret". Discord checks the endpoint on registration with a
//! PING and with invalid signatures (which must get 401).
//! <https://discord.com/developers/docs/interactions/overview#setting-up-an-endpoint-validating-security-request-headers>
//!
//! A PING (`type` 1) is answered `{"type":1}` and not queued. Any other interaction is queued
//! (dedup key: its `id`) and then answered with a deferral within Discord's 3 seconds — type 5
//! (deferred message) for commands, 6 (deferred update) for components and modals, and an empty
//! choice list for autocomplete — so the worker's handlers reply later through the interaction
//! token, as Discord's deferred flow expects.

use std::time::{Duration, SystemTime};

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;

use crate::event::{ParseError, Parsed, Received, joined, scalar_at, str_at};

use super::{
    Disposition, Facts, HandshakeResponse, OptionError, Options, Part, ProviderKind, RawRequest,
    SecretSet, Setup, Verified, Verifier, VerifyError, check_timestamp,
};

#[cfg(any(test, feature = "testkit"))]
use super::testkit::{Key, Request, seed};

const SIGNATURE: &str = "x-signature-ed25519";
const TIMESTAMP: &str = "x-signature-timestamp";

#[derive(Debug)]
pub struct Discord {
    keys: Vec<(VerifyingKey, Option<SystemTime>)>,
    tolerance: Duration,
}

impl Discord {
    pub fn new(secrets: SecretSet, tolerance: Duration) -> Result<Self, OptionError> {
        let keys = secrets
            .0
            .iter()
            .map(|e| {
                let text = std::str::from_utf8(e.value.expose()).unwrap_or_default();
                let bytes: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad_key("not 64 hex characters"))?;
                let key = VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| bad_key("not an Ed25519 public key"))?;
                Ok((key, e.expires_at))
            })
            .collect::<Result<Vec<_>, OptionError>>()?;
        Ok(Self { keys, tolerance })
    }
}

fn bad_key(reason: &str) -> OptionError {
    OptionError::BadSecret {
        provider: ProviderKind::Discord,
        reason: format!("the application public key is {reason}"),
    }
}

#[derive(serde::Deserialize)]
struct Interaction {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: u8,
    /// Present on a modal submit when the modal was opened from a message component.
    message: Option<serde::de::IgnoredAny>,
}

fn json(body: &'static str) -> HandshakeResponse {
    HandshakeResponse {
        content_type: "application/json",
        body: body.as_bytes().to_vec(),
    }
}

impl Verifier for Discord {
    fn verify(&self, req: &RawRequest<'_>, now: SystemTime) -> Result<Verified, VerifyError> {
        let sig = req
            .header(SIGNATURE)
            .ok_or(VerifyError::MissingHeader(SIGNATURE))?;
        let ts = req
            .header(TIMESTAMP)
            .ok_or(VerifyError::MissingHeader(TIMESTAMP))?;
        let sig: [u8; 64] = hex::decode(sig.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(VerifyError::MalformedHeader(SIGNATURE))?;
        let sig = Signature::from_bytes(&sig);
        let signed = [ts.as_bytes(), req.body].concat();
        let ok = self
            .keys
            .iter()
            .filter(|(_, until)| until.is_none_or(|t| now < t))
            .any(|(key, _)| key.verify_strict(&signed, &sig).is_ok());
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        let secs: i64 = ts
            .trim()
            .parse()
            .map_err(|_| VerifyError::MalformedHeader(TIMESTAMP))?;
        check_timestamp(secs, now, self.tolerance)?;
        let i: Interaction = serde_json::from_slice(req.body)
            .map_err(|_| VerifyError::InvalidPayload("body is not an interaction"))?;
        let (name, answer) = match i.kind {
            1 => {
                return Ok(Verified {
                    dedup_key: None,
                    event_type: None,
                    disposition: Disposition::Respond(json(r#"{"type":1}"#)),
                });
            }
            2 => ("application_command", r#"{"type":5}"#),
            3 => ("message_component", r#"{"type":6}"#),
            4 => (
                "application_command_autocomplete",
                r#"{"type":8,"data":{"choices":[]}}"#,
            ),
            // A deferred update (6) is only valid for a modal opened from a component (the
            // submit then carries that `message`); one opened by a command is deferred like one.
            5 if i.message.is_some() => ("modal_submit", r#"{"type":6}"#),
            5 => ("modal_submit", r#"{"type":5}"#),
            _ => return Err(VerifyError::InvalidPayload("unknown interaction type")),
        };
        let id =
            i.id.ok_or(VerifyError::InvalidPayload("the interaction has no id"))?;
        Ok(Verified {
            dedup_key: None,
            event_type: None,
            disposition: Disposition::Split {
                parts: vec![Part {
                    body: req.body.to_vec(),
                    content_type: "application/json",
                    dedup_key: id,
                    event_type: Some(name.to_owned()),
                }],
                response: Some(json(answer)),
            },
        })
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

// The registry's items (see `providers!` in `mod.rs`).

/// Module: the interaction type (`application_command`, `message_component`,
/// `application_command_autocomplete`, `modal_submit`); event type: with the command's name or
/// the component's `custom_id` (`application_command.deploy`); entity: the interaction `id`.
pub fn parse(_: &Received, payload: &mut Value, _: &Options) -> Result<Parsed, ParseError> {
    let module = match payload.get("type").and_then(Value::as_u64) {
        Some(2) => "application_command",
        Some(3) => "message_component",
        Some(4) => "application_command_autocomplete",
        Some(5) => "modal_submit",
        _ => return Err(ParseError::MissingField("type")),
    };
    let name = str_at(payload, "/data/name").or_else(|| str_at(payload, "/data/custom_id"));
    Ok(Parsed::new(
        module,
        joined(module, name),
        scalar_at(payload, "/id"),
    ))
}

pub const FACTS: Facts = Facts::PLAIN;

pub fn build(s: Setup<'_>) -> Result<Box<dyn Verifier>, OptionError> {
    Ok(Box::new(Discord::new(s.secrets, s.tolerance)?))
}

/// `X-Signature-Ed25519: <hex Ed25519 signature of timestamp + body>` with
/// `X-Signature-Timestamp`, by the key pair whose public half is [`public_key`].
#[cfg(any(test, feature = "testkit"))]
pub fn sign(req: &mut Request, key: &Key<'_>) {
    use ed25519_dalek::Signer as _;
    let ts = req.timestamp(TIMESTAMP, key.now);
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed(key.secret));
    let sig = signing.sign(&[ts.as_bytes(), &req.body].concat());
    req.set(SIGNATURE, hex::encode(sig.to_bytes()));
}

/// The application's public key (hex, as the developer portal shows it) a source holds for
/// requests [`sign`]ed with `secret`.
#[cfg(any(test, feature = "testkit"))]
pub fn public_key(secret: &str) -> String {
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed(secret));
    hex::encode(signing.verifying_key().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Headers, SecretEntry};
    use crate::secret::Secret;
    use proptest::prelude::*;

    // The key pair of RFC 8032 §7.1 test 1; the request signatures were made with its secret key
    // by Python's `cryptography` (Discord publishes no signed example).
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const TS: &str = "1700000000";
    const PING: &str = r#"{"application_id":"11","id":"1234567890","token":"tok","type":1,"user":{"id":"53908232506183680","username":"Mason"},"version":1}"#;
    const PING_SIG: &str = "8555d55211a72a889e9d9e568c8badb4e66d0f16fbb2653f6ce6197ac66f8b51c94abfc29e575504520bd617e9c2da79c9786823478cad758e2ef49c88614905";
    const CMD: &str = r#"{"application_id":"11","id":"1234567891","token":"tok","type":2,"data":{"id":"77","name":"deploy","type":1},"guild_id":"42","version":1}"#;
    const CMD_SIG: &str = "6f6a53fcc055e5a46b90232ed6ab7c6710f5dbc6cfe2a822a8defd6cf81f03de5c7985e300e5217a5d8ab1d6325a875ef168bc7f18d711ebc4c4b0354f1b450c";

    fn verifier() -> Discord {
        Discord::new(
            SecretSet::single(Secret::from(PUBLIC)),
            Duration::from_secs(300),
        )
        .unwrap()
    }

    fn check(v: &Discord, sig: &str, body: &[u8]) -> Result<Verified, VerifyError> {
        let headers: Headers = [(SIGNATURE, sig), (TIMESTAMP, TS)].into_iter().collect();
        v.verify(
            &RawRequest {
                method: "POST",
                path_and_query: "/",
                headers: &headers,
                body,
            },
            SystemTime::UNIX_EPOCH + Duration::from_secs(1700000010),
        )
    }

    #[test]
    fn rfc8032_key_verifies_its_test_signature() {
        // RFC 8032 §7.1 test 2: one-byte message 0x72.
        let key = VerifyingKey::from_bytes(
            &hex::decode("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
                .unwrap()
                .try_into()
                .unwrap(),
        )
        .unwrap();
        let sig = Signature::from_bytes(&hex::decode("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00").unwrap().try_into().unwrap());
        assert!(key.verify_strict(&[0x72], &sig).is_ok());
        assert!(key.verify_strict(&[0x73], &sig).is_err());
    }

    #[test]
    fn ping_is_answered_and_commands_are_queued_then_deferred() {
        let v = verifier();
        assert_eq!(
            check(&v, PING_SIG, PING.as_bytes()).unwrap().disposition,
            Disposition::Respond(json(r#"{"type":1}"#))
        );
        let Disposition::Split { parts, response } =
            check(&v, CMD_SIG, CMD.as_bytes()).unwrap().disposition
        else {
            panic!("commands are queued")
        };
        assert_eq!(parts[0].dedup_key, "1234567891");
        assert_eq!(parts[0].event_type.as_deref(), Some("application_command"));
        assert_eq!(response.unwrap().body, br#"{"type":5}"#);
        assert_eq!(
            check(&v, CMD_SIG, PING.as_bytes()).unwrap_err(),
            VerifyError::BadSignature
        );
        let expired = Discord::new(
            SecretSet(vec![SecretEntry {
                value: Secret::from(PUBLIC),
                expires_at: Some(SystemTime::UNIX_EPOCH),
            }]),
            Duration::from_secs(300),
        )
        .unwrap();
        assert_eq!(
            check(&expired, PING_SIG, PING.as_bytes()).unwrap_err(),
            VerifyError::BadSignature
        );
        assert!(Discord::new(SecretSet::single(Secret::from("zz")), Duration::ZERO).is_err());
    }

    #[test]
    fn modal_submits_are_deferred_as_their_opener_allows() {
        // Signed here with RFC 8032 test 1's secret key (the pair of `PUBLIC`).
        use ed25519_dalek::{Signer, SigningKey};
        let secret: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let key = SigningKey::from_bytes(&secret);
        assert_eq!(hex::encode(key.verifying_key().to_bytes()), PUBLIC);
        let answer = |body: &str| {
            let sig = hex::encode(
                key.sign(&[TS.as_bytes(), body.as_bytes()].concat())
                    .to_bytes(),
            );
            match check(&verifier(), &sig, body.as_bytes())
                .unwrap()
                .disposition
            {
                Disposition::Split { response, .. } => response.unwrap().body,
                other => panic!("modal submits are queued: {other:?}"),
            }
        };
        let from_command = r#"{"id":"5","type":5,"data":{"custom_id":"m1","components":[]},"token":"t","version":1}"#;
        let from_component = r#"{"id":"6","type":5,"data":{"custom_id":"m1","components":[]},"message":{"id":"9"},"token":"t","version":1}"#;
        assert_eq!(answer(from_command), br#"{"type":5}"#);
        assert_eq!(answer(from_component), br#"{"type":6}"#);
    }

    proptest! {
        // Ed25519 is slow in debug builds; 64 cases still cover every region of the request.
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_changed_byte_is_rejected(i in 0usize..PING.len(), flip in 1u8..=255) {
            let v = verifier();
            let mut body = PING.as_bytes().to_vec();
            body[i] ^= flip;
            prop_assert!(check(&v, PING_SIG, &body).is_err());
            let mut sig = hex::decode(PING_SIG).unwrap();
            sig[i % 64] ^= flip;
            prop_assert!(check(&v, &hex::encode(sig), PING.as_bytes()).is_err());
        }
    }

    #[test]
    fn parses_commands_and_components() {
        let e = crate::event::parse_json(ProviderKind::Discord, CMD.as_bytes());
        assert_eq!(
            e,
            "application_command application_command.deploy 1234567891"
        );
        // A button press (Discord's interactions reference: MESSAGE_COMPONENT, `custom_id`).
        let button = br#"{"application_id":"11","id":"1234567892","token":"tok","type":3,"data":{"component_type":2,"custom_id":"click_one"},"message":{"id":"9"},"version":1}"#;
        let e = crate::event::parse_json(ProviderKind::Discord, button);
        assert_eq!(
            e,
            "message_component message_component.click_one 1234567892"
        );
        let e = crate::event::parse_for_test(
            ProviderKind::Discord,
            "application/json",
            &[],
            &[],
            PING.as_bytes(),
        );
        assert_eq!(
            e,
            Err(ParseError::MissingField("type")),
            "a PING is answered, never parsed"
        );
    }

    #[test]
    fn the_test_signer_signs_as_the_published_key_pair() {
        // RFC 8032 §7.1 test 1's secret key: its public key is the verifier's vector key.
        let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        assert_eq!(public_key(seed), PUBLIC);
    }
}
