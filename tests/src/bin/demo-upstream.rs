//! The demo upstream `make run` starts: the test harness's echo server on a fixed port.

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".to_string());
    let _upstream = wasmgate_e2e::Upstream::start_on(&addr);
    println!("demo upstream echoing requests on http://{addr}");
    loop {
        std::thread::park();
    }
}
