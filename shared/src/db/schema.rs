//! Diesel table definitions (kept by hand beside `migrations/`).

diesel::table! {
    sources (id) {
        id -> Text,
        tenant -> Text,
        provider -> Text,
        options -> Jsonb,
        enabled -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    source_secrets (id) {
        id -> Int8,
        source_id -> Text,
        sealed -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    dedup_claims (source_id, dedup_key) {
        source_id -> Text,
        dedup_key -> Text,
        event_id -> Uuid,
        state -> Text,
        claimed_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::joinable!(source_secrets -> sources (source_id));

diesel::table! {
    events (id) {
        id -> Uuid,
        source_id -> Text,
        tenant -> Text,
        provider -> Text,
        module -> Text,
        event_type -> Text,
        entity_id -> Nullable<Text>,
        dedup_key -> Text,
        payload -> Jsonb,
        received_at -> Timestamptz,
        processed_at -> Timestamptz,
        headers -> Nullable<Jsonb>,
        raw_body -> Nullable<Bytea>,
    }
}

diesel::table! {
    processed (event_id, handler) {
        event_id -> Uuid,
        handler -> Text,
        processed_at -> Timestamptz,
    }
}

diesel::table! {
    dead_letters (event_id) {
        event_id -> Uuid,
        source_id -> Text,
        tenant -> Text,
        provider -> Text,
        module -> Nullable<Text>,
        handler -> Nullable<Text>,
        reason -> Text,
        attempts -> Int4,
        last_error -> Text,
        first_failed_at -> Timestamptz,
        last_failed_at -> Timestamptz,
        body -> Bytea,
        headers -> Jsonb,
        content_type -> Nullable<Text>,
        status -> Text,
        replay_count -> Int4,
        // Also `received_at timestamptz NULL` (the event's), read and written only in raw SQL:
        // diesel's table! stops at 16 columns.
    }
}
diesel::table! {
    attempts (id) {
        id -> Int8,
        event_id -> Uuid,
        tenant -> Text,
        source_id -> Text,
        handler -> Text,
        destination -> Nullable<Text>,
        attempt -> Int4,
        started_at -> Timestamptz,
        duration_ms -> Int4,
        outcome -> Text,
        http_status -> Nullable<Int4>,
        response_excerpt -> Nullable<Text>,
        error_class -> Nullable<Text>,
        error -> Nullable<Text>,
        worker -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    attempts,
    sources,
    source_secrets,
    dedup_claims,
    events,
    processed,
    dead_letters
);
