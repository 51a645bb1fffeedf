//! `embed_migrations!` reads `migrations/` at compile time; without this a new migration
//! directory would not rebuild the crate, and the binaries would silently lack it.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
