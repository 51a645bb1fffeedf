//! `hookline-worker sources …`: add, list, show, rotate-secret, enable, disable, remove, and for
//! Notion arm-capture and captured. Secrets are read from stdin or an environment variable (never
//! from argv, which `ps` shows), and never printed except when hookline generated them or an
//! operator asks for a captured token by name (`sources captured`).

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hookline_shared::config::Settings;
use hookline_shared::ids::SourceId;
use hookline_shared::providers::{Options, ProviderKind, parse_duration};
use hookline_shared::secret::Secret;
use hookline_shared::source::{NewSource, SourceInfo, SourceRepo};

#[derive(Subcommand)]
pub enum SourcesCommand {
    /// Add a source; prints {"id", "path", "secret" (only when generated)} as JSON.
    Add {
        /// Provider kind: github, stripe, slack, shopify, standard-webhooks, generic-hmac, hubspot,
        /// sendgrid, salesforce, notion, google-pubsub, paddle, linear, square, intercom,
        /// mailgun, twilio, gitlab, zoho, discord (see the README's provider table).
        #[arg(long)]
        provider: ProviderKind,
        #[arg(long)]
        tenant: String,
        /// Source id (default: generated). Letters, digits, `_` and `-`.
        #[arg(long)]
        id: Option<SourceId>,
        #[command(flatten)]
        secret: SecretInput,
        /// Provider or source option, repeatable: `tolerance=5m`, `dedup_window=72h`,
        /// `max_body_bytes=2097152`, generic-hmac's `header=x-signature`, …
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
    /// List sources.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one source (never its secrets), with `problem` when the ingress cannot serve it.
    Show { id: SourceId },
    /// Let the next unsigned Notion verification request store its token, for a while. Without
    /// this, no unsigned request can set a Notion source's token.
    ArmCapture {
        id: SourceId,
        /// How long the capture stays armed: `10m`, `1h`. It is spent by the first capture.
        #[arg(long = "for", default_value = "10m", value_parser = parse_grace)]
        window: Duration,
    },
    /// Print the verification token a Notion source captured (to paste into Notion).
    Captured { id: SourceId },
    /// Add a new secret; the current ones keep verifying until the grace period ends.
    RotateSecret {
        id: SourceId,
        #[command(flatten)]
        secret: RotateInput,
        /// How long the previous secret stays valid: `24h`, `30m`, `0s` (immediately invalid).
        #[arg(long, default_value = "24h", value_parser = parse_grace)]
        grace: Duration,
    },
    /// Stop accepting webhooks for a source (answered 404).
    Disable { id: SourceId },
    /// Accept webhooks for a source again.
    Enable { id: SourceId },
    /// Delete a source, its secrets and its dedup claims.
    Remove { id: SourceId },
}

/// Required for every provider but Notion, whose verification token arrives with Notion's
/// first request once an operator armed its capture (then `sources captured` reveals it), and
/// Google Pub/Sub, which verifies with Google's keys.
#[derive(Args)]
#[group(required = false, multiple = false)]
pub struct SecretInput {
    /// Read the secret from standard input (trailing newline removed).
    #[arg(long)]
    secret_stdin: bool,
    /// Read the secret from this environment variable.
    #[arg(long, value_name = "NAME")]
    secret_env: Option<String>,
    /// Generate a secret and print it once.
    #[arg(long)]
    generate_secret: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct RotateInput {
    /// Read the new secret from standard input (trailing newline removed).
    #[arg(long)]
    secret_stdin: bool,
    /// Generate the new secret and print it once.
    #[arg(long)]
    generate_secret: bool,
}

fn parse_grace(v: &str) -> Result<Duration, String> {
    parse_duration(v)
}

/// Returns the secret, and whether hookline generated it (then it is printed once).
fn read_secret(
    stdin: bool,
    env: Option<&str>,
    generate: bool,
    provider: ProviderKind,
) -> anyhow::Result<(Secret, bool)> {
    let secret = if generate {
        return Ok((hookline_shared::source::generate_secret(provider), true));
    } else if stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the secret from standard input")?;
        s.trim_end_matches(['\r', '\n']).to_owned()
    } else if let Some(name) = env {
        std::env::var(name)
            .with_context(|| format!("--secret-env: environment variable `{name}` is not set"))?
    } else {
        bail!(
            "a secret is required for provider {provider}: give one of --secret-stdin, \
             --secret-env NAME or --generate-secret"
        );
    };
    if secret.is_empty() {
        bail!("the secret is empty");
    }
    Ok((Secret::from(secret.as_str()), false))
}

fn parse_options(raw: &[String]) -> anyhow::Result<Options> {
    let mut options = Options::new();
    for o in raw {
        let Some((k, v)) = o.split_once('=') else {
            bail!("--option `{o}` must be KEY=VALUE");
        };
        if options.insert(k.trim().to_owned(), v.to_owned()).is_some() {
            bail!("--option `{}` is given twice", k.trim());
        }
    }
    Ok(options)
}

pub async fn run(settings: &Settings, cmd: SourcesCommand) -> anyhow::Result<()> {
    let key = settings.secret_key()?;
    let pool = hookline_shared::db::pool(&settings.database_url, 2)?;
    let repo = SourceRepo::new(pool, key);
    match cmd {
        SourcesCommand::Add {
            provider,
            tenant,
            id,
            secret,
            options,
        } => {
            let given =
                secret.secret_stdin || secret.secret_env.is_some() || secret.generate_secret;
            let (value, generated) = if !given && provider.secret_optional() {
                (None, false)
            } else {
                let (value, generated) = read_secret(
                    secret.secret_stdin,
                    secret.secret_env.as_deref(),
                    secret.generate_secret,
                    provider,
                )?;
                (Some(value), generated)
            };
            let id = id.unwrap_or_else(SourceId::generate);
            let info = repo
                .add(NewSource {
                    id,
                    tenant,
                    provider,
                    options: parse_options(&options)?,
                    secret: value.clone(),
                })
                .await?;
            let mut out = serde_json::json!({ "id": info.id, "path": info.path });
            if generated && let Some(value) = &value {
                out["secret"] = String::from_utf8_lossy(value.expose()).into();
            }
            println!("{out}");
        }
        SourcesCommand::List { tenant, json } => {
            let list = repo.list(tenant.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_table(&list);
            }
        }
        SourcesCommand::Show { id } => {
            println!("{}", serde_json::to_string_pretty(&repo.show(&id).await?)?);
        }
        SourcesCommand::ArmCapture { id, window } => {
            let until = chrono::Utc::now()
                + chrono::Duration::from_std(window).context("--for is too long")?;
            let info = repo.arm_capture(&id, until).await?;
            println!(
                "{}",
                serde_json::json!({
                    "id": info.id,
                    "capture_armed_until": info.options.get(hookline_shared::providers::notion::ARMED_UNTIL),
                })
            );
        }
        SourcesCommand::Captured { id } => {
            let tokens = repo.captured(&id).await?;
            if tokens.is_empty() {
                bail!(
                    "source {id} has no verification token yet: arm the capture with \
                     `hookline-worker sources arm-capture {id} --for 10m`, then create or \
                     resend the subscription in Notion"
                );
            }
            let tokens: Vec<String> = tokens
                .iter()
                .map(|t| String::from_utf8_lossy(t.expose()).into_owned())
                .collect();
            println!(
                "{}",
                serde_json::json!({ "id": id, "verification_token": tokens.last(), "all": tokens })
            );
        }
        SourcesCommand::RotateSecret { id, secret, grace } => {
            let provider = repo.show(&id).await?.provider;
            let (value, generated) =
                read_secret(secret.secret_stdin, None, secret.generate_secret, provider)?;
            let info = repo.rotate_secret(&id, value.clone(), grace).await?;
            let previous_until = info.secrets.iter().filter_map(|s| s.expires_at).max();
            let mut out =
                serde_json::json!({ "id": info.id, "previous_valid_until": previous_until });
            if generated {
                out["secret"] = String::from_utf8_lossy(value.expose()).into();
            }
            println!("{out}");
        }
        SourcesCommand::Disable { id } => {
            repo.set_enabled(&id, false).await?;
            println!("source {id} disabled");
        }
        SourcesCommand::Enable { id } => {
            repo.set_enabled(&id, true).await?;
            println!("source {id} enabled");
        }
        SourcesCommand::Remove { id } => {
            repo.remove(&id).await?;
            println!("source {id} removed");
        }
    }
    Ok(())
}

fn print_table(list: &[SourceInfo]) {
    let w = list
        .iter()
        .map(|s| s.id.as_str().len())
        .max()
        .unwrap_or(2)
        .max(2);
    let t = list
        .iter()
        .map(|s| s.tenant.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<w$}  {:<t$}  {:<17}  {:<8}  CREATED",
        "ID", "TENANT", "PROVIDER", "ENABLED"
    );
    for s in list {
        println!(
            "{:<w$}  {:<t$}  {:<17}  {:<8}  {}",
            s.id.as_str(),
            s.tenant,
            s.provider.as_str(),
            if s.enabled { "yes" } else { "no" },
            s.created_at.format("%Y-%m-%d %H:%M:%S"),
        );
    }
}
