//! The worker's SQL: events and processed markers, dead-letter archive and its queries.
//! Batches are single statements over `unnest` arrays.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, RunQueryDsl};
use hookline_shared::db::{DbError, PgPool};
use hookline_shared::event::NormalizedEvent;
use uuid::Uuid;

/// `(event_id, handler)` pairs already done among `ids`.
pub async fn processed(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, DbError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        event_id: Uuid,
        #[diesel(sql_type = Text)]
        handler: String,
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = pool.get().await?;
    let rows: Vec<Row> =
        diesel::sql_query("SELECT event_id, handler FROM processed WHERE event_id = ANY($1)")
            .bind::<Array<SqlUuid>, _>(ids)
            .load(&mut conn)
            .await?;
    Ok(rows.into_iter().map(|r| (r.event_id, r.handler)).collect())
}

const INSERT_EVENTS: &str = "\
INSERT INTO events (id, source_id, tenant, provider, module, event_type, entity_id, dedup_key, payload, received_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::jsonb[], $10::timestamptz[])
ON CONFLICT (id) DO NOTHING";

const INSERT_PROCESSED: &str = "\
INSERT INTO processed (event_id, handler)
SELECT unnest($1::uuid[]), $2
ON CONFLICT DO NOTHING";

/// Stores `events` and marks them processed by `handler`, in one transaction: a redelivered event
/// is neither stored twice nor marked without being stored.
pub async fn store_events(
    pool: &PgPool,
    handler: &str,
    events: &[&NormalizedEvent],
) -> Result<(), DbError> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.id.0).collect();
    let col =
        |f: fn(&NormalizedEvent) -> String| events.iter().map(|e| f(e)).collect::<Vec<String>>();
    let sources = col(|e| e.source_id.clone());
    let tenants = col(|e| e.tenant.clone());
    let providers = col(|e| e.provider.as_str().to_owned());
    let modules = col(|e| e.module.clone());
    let types = col(|e| e.event_type.clone());
    let entities: Vec<Option<String>> = events.iter().map(|e| e.entity_id.clone()).collect();
    let keys = col(|e| e.dedup_key.clone());
    let payloads: Vec<serde_json::Value> = events.iter().map(|e| e.payload.clone()).collect();
    let received: Vec<DateTime<Utc>> = events.iter().map(|e| e.received_at).collect();
    let handler = handler.to_owned();
    let mut conn = pool.get().await?;
    conn.transaction(async |conn| {
        diesel::sql_query(INSERT_EVENTS)
            .bind::<Array<SqlUuid>, _>(&ids)
            .bind::<Array<Text>, _>(&sources)
            .bind::<Array<Text>, _>(&tenants)
            .bind::<Array<Text>, _>(&providers)
            .bind::<Array<Text>, _>(&modules)
            .bind::<Array<Text>, _>(&types)
            .bind::<Array<Nullable<Text>>, _>(&entities)
            .bind::<Array<Text>, _>(&keys)
            .bind::<Array<Jsonb>, _>(&payloads)
            .bind::<Array<Timestamptz>, _>(&received)
            .execute(conn)
            .await?;
        diesel::sql_query(INSERT_PROCESSED)
            .bind::<Array<SqlUuid>, _>(&ids)
            .bind::<Text, _>(&handler)
            .execute(conn)
            .await?;
        Ok::<_, diesel::result::Error>(())
    })
    .await?;
    Ok(())
}

/// Marks `ids` processed by `handler` (handlers whose effect is outside the database).
pub async fn mark_processed(pool: &PgPool, handler: &str, ids: &[Uuid]) -> Result<(), DbError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut conn = pool.get().await?;
    diesel::sql_query(INSERT_PROCESSED)
        .bind::<Array<SqlUuid>, _>(ids)
        .bind::<Text, _>(handler)
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// One dead letter as the archiver writes it.
pub struct NewDeadLetter {
    pub event_id: Uuid,
    pub source_id: String,
    pub tenant: String,
    pub provider: String,
    pub module: Option<String>,
    pub handler: Option<String>,
    pub reason: String,
    pub attempts: i32,
    pub last_error: String,
    pub body: Vec<u8>,
    pub headers: serde_json::Value,
    pub content_type: Option<String>,
}

/// Archives a dead letter; an event dead-lettered again (after a replay) is parked again with its
/// new reason and error, its first failure time kept.
pub async fn archive(pool: &PgPool, d: &NewDeadLetter) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "INSERT INTO dead_letters (event_id, source_id, tenant, provider, module, handler, reason, attempts,
                                   last_error, body, headers, content_type)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (event_id) DO UPDATE SET
            module = EXCLUDED.module, handler = EXCLUDED.handler, reason = EXCLUDED.reason,
            attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, last_failed_at = now(),
            body = EXCLUDED.body, headers = EXCLUDED.headers, content_type = EXCLUDED.content_type,
            status = 'parked'",
    )
    .bind::<SqlUuid, _>(d.event_id)
    .bind::<Text, _>(&d.source_id)
    .bind::<Text, _>(&d.tenant)
    .bind::<Text, _>(&d.provider)
    .bind::<Nullable<Text>, _>(&d.module)
    .bind::<Nullable<Text>, _>(&d.handler)
    .bind::<Text, _>(&d.reason)
    .bind::<Integer, _>(d.attempts)
    .bind::<Text, _>(&d.last_error)
    .bind::<diesel::sql_types::Bytea, _>(&d.body)
    .bind::<Jsonb, _>(&d.headers)
    .bind::<Nullable<Text>, _>(&d.content_type)
    .execute(&mut conn)
    .await?;
    Ok(())
}
