//! `reelhouse-load`: the load harness. Its scenarios are not written yet; until
//! they are, it says so and fails rather than pretending to have measured anything.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("reelhouse-load: no scenarios are implemented yet (see the load-testing issue); nothing was measured");
    ExitCode::from(2)
}
