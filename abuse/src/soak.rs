//! The soak test: a mixed workload for a fixed time (see `run`).

use std::time::Duration;

use crate::cases::Ctx;

pub async fn run(_ctx: &Ctx, _duration: Duration) -> Result<String, String> {
    Err("the soak test is not written yet".into())
}
