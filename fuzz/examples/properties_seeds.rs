//! Writes the seeds of the `properties` target: each `normalize` seed's envelope, as the AMQP
//! content header the broker hands a worker (basic properties in wire format), followed by its
//! body. Run from fuzz/: `cargo run --example properties_seeds`.

use std::sync::Mutex;

static OUT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn sink(props: &lapin::BasicProperties, body: &[u8]) {
    let encode = lapin::protocol::basic::gen_properties(props);
    let ctx = encode(cookie_factory::WriteContext::from(Vec::new())).expect("properties encode");
    let mut wire = ctx.write;
    wire.extend_from_slice(body);
    OUT.lock().expect("seed list").push(wire);
}

fn main() {
    let _ = hookline_fuzz::ENVELOPE_SINK.set(sink);
    let mut seeds: Vec<_> = std::fs::read_dir("seeds/normalize")
        .expect("run from fuzz/")
        .map(|e| e.expect("seed").path())
        .collect();
    seeds.sort();
    std::fs::create_dir_all("seeds/properties").expect("seeds/properties");
    for path in seeds {
        hookline_fuzz::normalize(&std::fs::read(&path).expect("seed file"));
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("seed");
        for (i, wire) in OUT.lock().expect("seed list").drain(..).enumerate() {
            let out = format!("seeds/properties/{stem}-{i}.bin");
            std::fs::write(&out, wire).expect("write seed");
            println!("{out}");
        }
    }
}
