//! The closing ratios: each scenario's rate against the baseline that
//! bounds it (health Check, Redis GET, Ed25519 verify, argon2 verify).

use crate::{baseline::Baselines, figures::Figures};

/// Prints every ratio whose figures this run has.
pub(crate) fn print(results: &[Figures], baselines: &Baselines) {
    let rate = |name: &str| results.iter().find(|f| f.name.starts_with(name)).map(Figures::rate);
    if let (Some(hot), Some(health)) = (rate("validate-hot"), rate("health")) {
        println!("ratio validate-hot / health Check: {:.2}", hot / health);
    }
    if let (Some(hot), Some(redis)) = (rate("validate-hot"), baselines.redis) {
        println!("ratio validate-hot / Redis GET: {:.2}", hot / redis);
    }
    if let (Some(cold), Some(health)) = (rate("validate-cold"), rate("health")) {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1) as f64;
        let ceiling = health.min(cores * baselines.verify_rate);
        println!("ratio validate-cold / min(health, cores × Ed25519 verify): {:.2}", cold / ceiling);
    }
    if let (Some(introspect), Some(validate)) = (rate("oauth-introspect"), rate("oauth-validate")) {
        println!("ratio oauth-introspect / oauth-validate (same token, same run): {:.2}", introspect / validate);
    }
    if let Some(auth) = rate("authenticate") {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1) as f64;
        println!(
            "ratio authenticate / (cores / argon2 verify time): {:.2}",
            auth / (cores / baselines.argon2_time.as_secs_f64())
        );
    }
}
