//! Behaviours, chosen per request by directives in the model name (`stub+tps=50+status=429x2`)
//! and/or the `x-stub` header (same syntax), on top of the server's defaults.

use std::time::Duration;

/// What a request asked the stub to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behaviour {
    /// Reply with this text instead of the script's answer.
    pub fixed: Option<String>,
    /// Delay before the response headers (a range picks uniformly).
    pub latency: Option<(Duration, Duration)>,
    /// Streamed tokens per second (deltas are paced); none means as fast as possible.
    pub tokens_per_second: Option<f64>,
    /// Answer with this HTTP status, `times` times per distinct directive string, then succeed
    /// (`times == None`: always).
    pub status: Option<(u16, Option<u32>)>,
    /// `Retry-After` seconds sent with 429/529.
    pub retry_after: Option<f64>,
    /// An event whose data is not JSON, midway through the stream.
    pub malformed: bool,
    /// Cut the stream before its final event.
    pub truncate: bool,
    /// Tool-call arguments that are not valid JSON.
    pub invalid_tool_json: bool,
    /// Call a tool named `no_such_tool`.
    pub unknown_tool: bool,
    /// Require a bearer token issued by this stub's `/oauth/token`.
    pub oauth: bool,
    /// A 400 saying the prompt is too long.
    pub context_too_long: bool,
    /// The context window in tokens (one per 4 bytes): a longer prompt gets the provider's
    /// 400 saying the prompt is too long.
    pub max_context: Option<u64>,
}

/// A directive the stub does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDirective(pub String);

impl Behaviour {
    /// Applies `+`-separated directives; the first segment of a model name (its base name) is
    /// skipped by the caller.
    pub fn apply(&mut self, directives: &str) -> Result<(), UnknownDirective> {
        for directive in directives.split('+').filter(|d| !d.is_empty()) {
            let (key, value) = directive.split_once('=').unwrap_or((directive, ""));
            let bad = || UnknownDirective(directive.to_owned());
            match key {
                "fixed" => self.fixed = Some(value.replace('_', " ")),
                "latency" | "slow-headers" => {
                    let (lo, hi) = value.split_once('-').unwrap_or((value, value));
                    let ms = |s: &str| {
                        s.trim_end_matches("ms").parse::<u64>().map(Duration::from_millis)
                    };
                    self.latency = Some((ms(lo).map_err(|_| bad())?, ms(hi).map_err(|_| bad())?));
                }
                "tps" => self.tokens_per_second = Some(value.parse().map_err(|_| bad())?),
                "status" => {
                    let (code, times) = match value.split_once('x') {
                        Some((c, t)) => (c, Some(t.parse().map_err(|_| bad())?)),
                        None => (value, None),
                    };
                    self.status = Some((code.parse().map_err(|_| bad())?, times));
                }
                "retry-after" => self.retry_after = Some(value.parse().map_err(|_| bad())?),
                "malformed" => self.malformed = true,
                "truncate" => self.truncate = true,
                "invalid-tool-json" => self.invalid_tool_json = true,
                "unknown-tool" => self.unknown_tool = true,
                "oauth" => self.oauth = true,
                "context-too-long" => self.context_too_long = true,
                "max-context" => self.max_context = Some(value.parse().map_err(|_| bad())?),
                "script" | "echo" => {}
                _ => return Err(bad()),
            }
        }
        Ok(())
    }

    /// The behaviour of a request: server defaults, then the model name's directives, then the
    /// header's.
    pub fn for_request(
        defaults: &Behaviour,
        model: &str,
        header: Option<&str>,
    ) -> Result<Self, UnknownDirective> {
        let mut behaviour = defaults.clone();
        if let Some((_, directives)) = model.split_once('+') {
            behaviour.apply(directives)?;
        }
        if let Some(header) = header {
            behaviour.apply(header)?;
        }
        Ok(behaviour)
    }

    pub fn pick_latency(&self) -> Option<Duration> {
        use rand::Rng;
        let (lo, hi) = self.latency?;
        if hi <= lo {
            return Some(lo);
        }
        // A stand-in provider's latency spread, not the gateway's behaviour: no seed needed.
        #[allow(clippy::disallowed_methods)]
        let millis = rand::rng().random_range(lo.as_millis() as u64..=hi.as_millis() as u64);
        Some(Duration::from_millis(millis))
    }

    pub fn delta_pause(&self) -> Option<Duration> {
        self.tokens_per_second.filter(|t| *t > 0.0).map(|t| Duration::from_secs_f64(1.0 / t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directives() {
        let b = Behaviour::for_request(
            &Behaviour::default(),
            "gpt+tps=50+status=429x2+latency=10-20",
            Some("truncate"),
        )
        .unwrap();
        assert_eq!(b.tokens_per_second, Some(50.0));
        assert_eq!(b.status, Some((429, Some(2))));
        assert_eq!(b.latency, Some((Duration::from_millis(10), Duration::from_millis(20))));
        assert!(b.truncate);
        assert!(Behaviour::for_request(&Behaviour::default(), "m+bogus", None).is_err());
        assert_eq!(
            Behaviour::for_request(&Behaviour::default(), "m+fixed=hi_there", None)
                .unwrap()
                .fixed
                .as_deref(),
            Some("hi there")
        );
    }
}
