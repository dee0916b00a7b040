//! `sluice-bench`: a Kafka-protocol load generator (skeleton; the full tool is its own issue).

fn main() {
    eprintln!("sluice-bench: not implemented yet; see bench/README.md");
    std::process::exit(2);
}
