//! srv6top: the live SRv6 flow monitor. Not built yet: this binary says so and exits non-zero.

fn main() {
    eprintln!("srv6top: not yet implemented (planned: live/recorded SRv6 flow monitor); see README.md");
    std::process::exit(2);
}
