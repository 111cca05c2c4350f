//! HTTPS to the endpoint (SPEC §5, Transport): verified certificates, and a site's own
//! CA trusted through `--ca-bundle` or `SSL_CERT_FILE`. The tests make their own CA.

mod common;
mod upload_support;

use common::collector::Collector;
use common::sandbox::*;
use common::tls::{ServerCert, TestCa};
use upload_support::*;

#[test]
fn an_unknown_ca_is_refused_and_nothing_is_lost() {
    let sb = Sandbox::new();
    let ca = TestCa::new();
    let c = Collector::start_https(&ca, ServerCert::Valid);
    record_events(&sb, 3, "s", "1", "m");
    let out = upload(&sb, &c.url(), &[]);
    assert!(
        matches!(out.status.code(), Some(69) | Some(75)),
        "exit {:?}: {}",
        out.status.code(),
        stderr(&out)
    );
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("certificate") && err.contains(&c.url()),
        "{err}"
    );
    assert!(err.contains("--ca-bundle"), "{err}");
    assert_eq!(c.request_count(), 0);
    assert_eq!(summary(&sb)["queued"], 3);
}

#[test]
fn a_ca_bundle_makes_it_trusted() {
    let sb = Sandbox::new();
    let ca = TestCa::new();
    let c = Collector::start_https(&ca, ServerCert::Valid);
    record_events(&sb, 3, "s", "1", "m");
    let out = upload(
        &sb,
        &c.url(),
        &["--ca-bundle", ca.pem_path().to_str().unwrap()],
    );
    assert_ok(&out);
    c.assert_valid();
    assert_eq!(c.delivered_count(), 3);
    assert_eq!(summary(&sb)["queued"], 0);
}

#[test]
fn ssl_cert_file_makes_it_trusted() {
    let sb = Sandbox::new();
    let ca = TestCa::new();
    let c = Collector::start_https(&ca, ServerCert::Valid);
    record_events(&sb, 3, "s", "1", "m");
    let out = upload_env(
        &sb,
        &c.url(),
        &[],
        &[("SSL_CERT_FILE", ca.pem_path().to_str().unwrap())],
    );
    assert_ok(&out);
    assert_eq!(c.delivered_count(), 3);
    // localhost is in the certificate too.
    record_events(&sb, 1, "s", "1", "m");
    let url = format!("https://localhost:{}/v1.1/events/json", c.addr().port());
    let out = upload_env(
        &sb,
        &url,
        &[],
        &[("SSL_CERT_FILE", ca.pem_path().to_str().unwrap())],
    );
    assert_ok(&out);
    assert_eq!(c.delivered_count(), 4);
}

#[test]
fn a_wrong_host_or_expired_certificate_is_refused_even_with_the_ca() {
    for kind in [ServerCert::WrongHost, ServerCert::Expired] {
        let sb = Sandbox::new();
        let ca = TestCa::new();
        let c = Collector::start_https(&ca, kind);
        record_events(&sb, 2, "s", "1", "m");
        let out = upload(
            &sb,
            &c.url(),
            &["--ca-bundle", ca.pem_path().to_str().unwrap()],
        );
        assert!(
            matches!(out.status.code(), Some(69) | Some(75)),
            "{kind:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("certificate"),
            "{kind:?}: {}",
            stderr(&out)
        );
        assert_eq!(c.request_count(), 0);
        assert_eq!(summary(&sb)["queued"], 2);
    }
}

#[test]
fn a_bad_ca_bundle_is_a_usage_error() {
    let sb = Sandbox::new();
    let ca = TestCa::new();
    let c = Collector::start_https(&ca, ServerCert::Valid);
    record_events(&sb, 1, "s", "1", "m");
    let missing = upload(&sb, &c.url(), &["--ca-bundle", "/no/such/ca.pem"]);
    assert_exit(&missing, 64);
    assert!(stderr(&missing).contains("/no/such/ca.pem"));
    let not_pem = sb.root().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let out = upload(&sb, &c.url(), &["--ca-bundle", not_pem.to_str().unwrap()]);
    assert_exit(&out, 64);
    assert!(
        stderr(&out).contains("no PEM certificate"),
        "{}",
        stderr(&out)
    );
    assert_eq!(summary(&sb)["queued"], 1);
}
