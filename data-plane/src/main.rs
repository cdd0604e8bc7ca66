//! `portico-dp`, the data plane, is not built yet: it arrives with the
//! data-plane issue. Until then this binary says so and exits non-zero, so
//! nothing mistakes it for a working gateway.

fn main() -> std::process::ExitCode {
    eprintln!("portico-dp: error: the data plane is not implemented in this build yet; only portico-cp and portico are usable");
    std::process::ExitCode::from(2)
}
