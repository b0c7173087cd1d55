//! The safety nets that watch rather than deliver: the pub/sub liveness probe and the
//! periodic top-offset checks for channels that went quiet.

mod probe;
mod top_checks;

pub(crate) use probe::{Probe, probes};
pub(crate) use top_checks::top_checks;
