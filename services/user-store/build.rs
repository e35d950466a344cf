// `sqlx::migrate!` embeds the migration files it finds when this crate compiles; a new file
// alone would not make cargo recompile it (sqlx's documented build script).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
