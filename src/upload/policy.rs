//! What an answer means for a batch (SPEC §5), and how long to wait after a failure.
//!
//! One table, in one place: the run loop asks [`verdict`] and does what it says.

use std::time::{Duration, SystemTime};

use crate::upload::transport::{Answer, Failure};

/// What to do with a batch after one attempt to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: acknowledged, delete it.
    Delivered,
    /// 400, 422: the endpoint will never take it; set it aside.
    Rejected { reason: String },
    /// 413: too large; send each half on its own (a single event is rejected).
    Split,
    /// 408, 429, 5xx, no answer: keep it, stop, and try again in a later run, not before
    /// `retry_after` if the endpoint said so.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 401, 403, 404, other 4xx, a redirect, a certificate we do not trust: keep it and
    /// stop; a person has to fix the configuration.
    Refused { reason: String },
}

/// The first backoff after a failed run; it doubles with each further one.
pub const BACKOFF_START: Duration = Duration::from_secs(30);
/// The longest backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// The longest `Retry-After` honoured: a broken or hostile value must not silence
/// uploads for months.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(86_400);

/// Decides what an attempt's result means for its batch.
pub fn verdict(result: &Result<Answer, Failure>, now: SystemTime) -> Verdict {
    let answer = match result {
        Ok(answer) => answer,
        Err(failure) if failure.certificate => {
            return Verdict::Refused {
                reason: failure.message.clone(),
            }
        }
        Err(failure) => {
            return Verdict::Retry {
                reason: failure.message.clone(),
                retry_after: None,
            }
        }
    };
    let status = answer.status;
    let described = describe(answer);
    match status {
        200..=299 => Verdict::Delivered,
        400 | 422 => Verdict::Rejected { reason: described },
        413 => Verdict::Split,
        408 | 429 | 500..=599 => Verdict::Retry {
            reason: described,
            retry_after: answer
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now)),
        },
        300..=399 => Verdict::Refused {
            reason: match &answer.location {
                Some(to) => format!(
                    "{described}, a redirect to {}; telespool does not follow redirects: set the \
                     endpoint to the URL that answers",
                    printable(to)
                ),
                None => format!(
                    "{described}, a redirect; telespool does not follow redirects: set the \
                     endpoint to the URL that answers"
                ),
            },
        },
        _ => Verdict::Refused {
            reason: format!("{described}: check the endpoint URL or credentials"),
        },
    }
}

/// `HTTP 503 Service Unavailable (reason the endpoint gave)`.
fn describe(answer: &Answer) -> String {
    let mut text = format!("HTTP {}", answer.status);
    if let Some(reason) = status_reason(answer.status) {
        text.push(' ');
        text.push_str(reason);
    }
    let said = printable(answer.body.trim());
    if !said.is_empty() {
        text.push_str(&format!(" ({said})"));
    }
    text
}

fn status_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}

/// What the endpoint said, made safe for one line: control characters escaped, at
/// most 200 characters.
pub fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// `Retry-After` as seconds or an HTTP date; `None` if it is neither. Capped at
/// [`RETRY_AFTER_MAX`]; a date in the past means no wait.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

/// The wait after the `failures`-th consecutive failed run (1 for the first):
/// 30 s, 60 s, 120 s, ... up to an hour.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (BACKOFF_START * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Result<Answer, Failure> {
        Ok(Answer {
            status,
            retry_after: None,
            location: None,
            body: String::new(),
        })
    }

    #[test]
    fn the_table_of_spec_5() {
        let now = SystemTime::now();
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(verdict(&answer(s), now), Verdict::Delivered, "{s}");
        }
        for s in [400, 422] {
            assert!(matches!(verdict(&answer(s), now), Verdict::Rejected { .. }));
        }
        assert_eq!(verdict(&answer(413), now), Verdict::Split);
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(
                matches!(verdict(&answer(s), now), Verdict::Retry { .. }),
                "{s}"
            );
        }
        for s in [301, 302, 307, 308, 401, 403, 404, 405, 410, 418] {
            assert!(
                matches!(verdict(&answer(s), now), Verdict::Refused { .. }),
                "{s}"
            );
        }
        let failed = Err(Failure {
            message: "connection refused".into(),
            certificate: false,
        });
        assert!(matches!(verdict(&failed, now), Verdict::Retry { .. }));
        let untrusted = Err(Failure {
            message: "certificate".into(),
            certificate: true,
        });
        assert!(matches!(verdict(&untrusted, now), Verdict::Refused { .. }));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(2 * 60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999", now), Some(RETRY_AFTER_MAX));
        let mut with_retry = answer(503);
        if let Ok(a) = &mut with_retry {
            a.retry_after = Some("7".into());
        }
        assert_eq!(
            verdict(&with_retry, now),
            Verdict::Retry {
                reason: "HTTP 503 Service Unavailable".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn backoff_doubles_to_an_hour() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
        assert_eq!(backoff(0), BACKOFF_START);
    }
}
