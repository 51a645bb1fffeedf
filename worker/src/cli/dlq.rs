//! `hookline-worker dlq …`: list, show, replay and purge dead letters archived in PostgreSQL.
//! Replay republishes the original message (body, headers, message id) to the work queue with
//! its attempt count reset, waits for the broker's confirm, then marks the row replayed: safe to
//! interrupt and run again, since only rows still `parked` are picked up.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use diesel::{ExpressionMethods, PgTextExpressionMethods, QueryDsl, Queryable};
use diesel_async::RunQueryDsl;
use hookline_shared::config::Settings;
use hookline_shared::db::schema::dead_letters as dl;
use hookline_shared::db::{self, PgPool};
use hookline_shared::envelope::H_ATTEMPT;
use hookline_shared::providers::parse_duration;
use hookline_shared::topology::{INGRESS_EXCHANGE, WORK_ROUTING_KEY};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use serde::Serialize;
use uuid::Uuid;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters (newest failure first).
    List {
        #[command(flatten)]
        filter: Filter,
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: reason, attempts, last error, headers, payload.
    Show { id: Uuid },
    /// Republish dead letters to the work queue with their attempt count reset.
    Replay {
        #[command(flatten)]
        select: Selection,
        /// Show what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many messages per second, e.g. `50` or `50/s`.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
    },
    /// Mark dead letters purged and drop their payloads.
    Purge {
        #[command(flatten)]
        select: Selection,
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args, Clone, Default)]
pub struct Filter {
    #[arg(long)]
    source: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    module: Option<String>,
    #[arg(long)]
    handler: Option<String>,
    /// Only failures within this long, e.g. `2h`, `30m`.
    #[arg(long, value_parser = parse_duration)]
    since: Option<Duration>,
    /// Only those whose last error contains this text (case-insensitive).
    #[arg(long)]
    error_contains: Option<String>,
    /// parked (default), replayed, purged or all.
    #[arg(long, default_value = "parked")]
    status: String,
    #[arg(long, default_value_t = 100)]
    limit: i64,
}

#[derive(Args, Clone)]
pub struct Selection {
    /// Specific dead letters (repeatable).
    #[arg(long = "id")]
    ids: Vec<Uuid>,
    /// Every parked dead letter (with no filter).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filter: Filter,
}

fn parse_rate(v: &str) -> Result<f64, String> {
    let n = v.trim_end_matches("/s").trim();
    n.parse::<f64>()
        .ok()
        .filter(|r| *r > 0.0)
        .ok_or_else(|| format!("--rate `{v}` must be a positive number per second, e.g. 50/s"))
}

#[derive(Queryable, Serialize)]
struct Row {
    event_id: Uuid,
    source_id: String,
    tenant: String,
    provider: String,
    module: Option<String>,
    handler: Option<String>,
    reason: String,
    attempts: i32,
    last_error: String,
    first_failed_at: DateTime<Utc>,
    last_failed_at: DateTime<Utc>,
    status: String,
    replay_count: i32,
}

type Columns = (
    dl::event_id,
    dl::source_id,
    dl::tenant,
    dl::provider,
    dl::module,
    dl::handler,
    dl::reason,
    dl::attempts,
    dl::last_error,
    dl::first_failed_at,
    dl::last_failed_at,
    dl::status,
    dl::replay_count,
);
const COLUMNS: Columns = (
    dl::event_id,
    dl::source_id,
    dl::tenant,
    dl::provider,
    dl::module,
    dl::handler,
    dl::reason,
    dl::attempts,
    dl::last_error,
    dl::first_failed_at,
    dl::last_failed_at,
    dl::status,
    dl::replay_count,
);

async fn select(pool: &PgPool, f: &Filter, ids: &[Uuid]) -> anyhow::Result<Vec<Row>> {
    let mut q = dl::table.select(COLUMNS).into_boxed();
    if !ids.is_empty() {
        q = q.filter(dl::event_id.eq_any(ids.to_vec()));
    }
    match f.status.as_str() {
        "all" => {}
        s @ ("parked" | "replayed" | "purged") => q = q.filter(dl::status.eq(s.to_owned())),
        other => bail!("--status `{other}` must be parked, replayed, purged or all"),
    }
    if let Some(v) = &f.source {
        q = q.filter(dl::source_id.eq(v.clone()));
    }
    if let Some(v) = &f.tenant {
        q = q.filter(dl::tenant.eq(v.clone()));
    }
    if let Some(v) = &f.module {
        q = q.filter(dl::module.eq(v.clone()));
    }
    if let Some(v) = &f.handler {
        q = q.filter(dl::handler.eq(v.clone()));
    }
    if let Some(d) = f.since {
        let since = Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        q = q.filter(dl::last_failed_at.ge(since));
    }
    if let Some(text) = &f.error_contains {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        q = q.filter(dl::last_error.ilike(format!("%{escaped}%")));
    }
    if f.limit < 1 {
        bail!("--limit must be at least 1");
    }
    let mut conn = pool.get().await?;
    Ok(q.order(dl::last_failed_at.desc())
        .limit(f.limit)
        .load(&mut conn)
        .await?)
}

fn selection_is_given(s: &Selection) -> bool {
    let f = &s.filter;
    s.all
        || !s.ids.is_empty()
        || f.source.is_some()
        || f.tenant.is_some()
        || f.module.is_some()
        || f.handler.is_some()
        || f.since.is_some()
        || f.error_contains.is_some()
}

pub async fn run(settings: &Settings, cmd: DlqCommand) -> anyhow::Result<()> {
    let pool = db::pool(&settings.database_url, 2)?;
    match cmd {
        DlqCommand::List { filter, json } => {
            let rows = select(&pool, &filter, &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&rows);
            }
        }
        DlqCommand::Show { id } => show(&pool, id).await?,
        DlqCommand::Replay {
            mut select,
            dry_run,
            rate,
        } => {
            if !selection_is_given(&select) {
                bail!(
                    "say what to replay: --id ID (repeatable), --all, or filters such as --source, --since, --error-contains"
                );
            }
            select.filter.status = "parked".into();
            if select.all || !select.ids.is_empty() {
                select.filter.limit = select.filter.limit.max(1_000_000);
            }
            replay(settings, &pool, &select, dry_run, rate).await?;
        }
        DlqCommand::Purge { mut select, yes } => {
            if !selection_is_given(&select) {
                bail!("say what to purge: --id ID (repeatable), --all, or filters");
            }
            if !yes {
                bail!("purging drops payloads for good; add --yes to confirm");
            }
            select.filter.status = "parked".into();
            select.filter.limit = select.filter.limit.max(1_000_000);
            let rows = self::select(&pool, &select.filter, &select.ids).await?;
            let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
            let mut conn = pool.get().await?;
            let n = diesel::update(
                dl::table
                    .filter(dl::event_id.eq_any(ids))
                    .filter(dl::status.eq("parked")),
            )
            .set((dl::status.eq("purged"), dl::body.eq(Vec::<u8>::new())))
            .execute(&mut conn)
            .await?;
            println!("purged {n} dead letter(s)");
        }
    }
    Ok(())
}

async fn show(pool: &PgPool, id: Uuid) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let (row, body, headers, content_type): (Row, Vec<u8>, serde_json::Value, Option<String>) =
        dl::table
            .filter(dl::event_id.eq(id))
            .select((COLUMNS, dl::body, dl::headers, dl::content_type))
            .first(&mut conn)
            .await
            .with_context(|| format!("dead letter {id}"))?;
    let payload = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => v,
        Err(_) => serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    let mut out = serde_json::to_value(&row)?;
    out["content_type"] = content_type.into();
    out["headers"] = headers;
    out["payload"] = payload;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Rebuilds the message's AMQP headers for a replay: hookline's own headers and the forwarded
/// provider headers, without the previous attempt count, dead-letter notes or broker `x-` headers.
pub fn replay_headers(json: &serde_json::Value) -> FieldTable {
    let mut t = FieldTable::default();
    if let Some(m) = json.as_object() {
        for (k, v) in m {
            if k.starts_with("x-") || k.starts_with("hookline-dl-") || k == H_ATTEMPT {
                continue;
            }
            if let Some(s) = v.as_str() {
                t.insert(
                    ShortString::from(k.as_str()),
                    AMQPValue::LongString(s.into()),
                );
            }
        }
    }
    t
}

async fn replay(
    settings: &Settings,
    pool: &PgPool,
    sel: &Selection,
    dry_run: bool,
    rate: Option<f64>,
) -> anyhow::Result<()> {
    let rows = select(pool, &sel.filter, &sel.ids).await?;
    if dry_run {
        for r in &rows {
            println!(
                "would replay {}  {}  {}  {}",
                r.event_id, r.source_id, r.reason, r.last_error
            );
        }
        println!("{} dead letter(s) would be replayed", rows.len());
        return Ok(());
    }
    if rows.is_empty() {
        println!("nothing to replay");
        return Ok(());
    }
    let conn = Connection::connect(&settings.amqp_url, ConnectionProperties::default())
        .await
        .with_context(|| format!("broker {}", db::redact_url(&settings.amqp_url)))?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(rows.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} replayed  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let started = Instant::now();
    let (mut replayed, mut failed) = (0u64, 0u64);
    let mut db = pool.get().await?;
    for (i, r) in rows.iter().enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let (body, headers, content_type): (Vec<u8>, serde_json::Value, Option<String>) = dl::table
            .filter(dl::event_id.eq(r.event_id))
            .select((dl::body, dl::headers, dl::content_type))
            .first(&mut db)
            .await?;
        let mut props = BasicProperties::default()
            .with_message_id(r.event_id.to_string().into())
            .with_delivery_mode(2)
            .with_app_id("hookline-worker dlq replay".into())
            .with_headers(replay_headers(&headers));
        if let Some(ct) = content_type {
            props = props.with_content_type(ct.into());
        }
        let opts = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirmed = async {
            let c = ch
                .basic_publish(
                    INGRESS_EXCHANGE.into(),
                    WORK_ROUTING_KEY.into(),
                    opts,
                    &body,
                    props,
                )
                .await?;
            c.await
        };
        match tokio::time::timeout(Duration::from_secs(10), confirmed).await {
            Ok(Ok(Confirmation::Ack(None))) => {
                diesel::update(dl::table.filter(dl::event_id.eq(r.event_id)))
                    .set((
                        dl::status.eq("replayed"),
                        dl::replay_count.eq(dl::replay_count + 1),
                    ))
                    .execute(&mut db)
                    .await?;
                replayed += 1;
            }
            other => {
                failed += 1;
                let why = match other {
                    Ok(Ok(c)) => format!("{c:?}"),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "no confirm within 10s".into(),
                };
                eprintln!("could not replay {}: {why}", r.event_id);
                if failed >= 10 && replayed == 0 {
                    bail!(
                        "giving up after {failed} failures; is the broker reachable and the topology declared?"
                    );
                }
            }
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let _ = conn.close(200, "done".into()).await;
    println!(
        "replayed {replayed} dead letter(s){} in {:.1}s",
        if failed > 0 {
            format!(", {failed} failed (run again to retry them)")
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!("{failed} dead letter(s) were not replayed");
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<36}  {:<16}  {:<10}  {:<12}  {:<18}  {:>4}  {:<20}  LAST ERROR",
        "EVENT", "SOURCE", "MODULE", "HANDLER", "REASON", "TRY", "LAST FAILED"
    );
    for r in rows {
        let err: String = r.last_error.chars().take(60).collect();
        println!(
            "{:<36}  {:<16}  {:<10}  {:<12}  {:<18}  {:>4}  {:<20}  {}",
            r.event_id,
            r.source_id,
            r.module.as_deref().unwrap_or("-"),
            r.handler.as_deref().unwrap_or("-"),
            r.reason,
            r.attempts,
            r.last_failed_at.format("%Y-%m-%d %H:%M:%S"),
            err
        );
    }
    println!("{} dead letter(s)", rows.len());
}
