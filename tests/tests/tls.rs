//! TLS termination end to end: certificates made in the test (rcgen),
//! uploaded through the admin API, served by a real data plane by SNI.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::net::SocketAddr;
use std::time::Duration;

use portico_test_support::tls::{TestCertificate, self_signed};
use portico_test_support::{ControlPlane, DataPlane, TestDb, TestUpstream, eventually, free_port};
use reqwest::{Method, StatusCode, Version};
use serde_json::{Value, json};

async fn admin(cp: &ControlPlane, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    let response = cp.admin(method, &format!("/api/v1/gateways/default{path}")).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn upload(name: &str, certificate: &TestCertificate, default: bool) -> Value {
    json!({"name": name, "cert": certificate.cert_pem, "key": certificate.key_pem, "default": default})
}

/// A client that trusts `trusted` and sends `names` to the TLS listener.
fn client(tls: SocketAddr, names: &[&str], trusted: &[&TestCertificate]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().no_proxy().tls_info(true).use_rustls_tls();
    for name in names {
        builder = builder.resolve(name, tls);
    }
    for certificate in trusted {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(certificate.cert_pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// The DER of the certificate the server presented.
fn presented(response: &reqwest::Response) -> Vec<u8> {
    response.extensions().get::<reqwest::tls::TlsInfo>().and_then(|info| info.peer_certificate()).unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_h2_is_negotiated_and_a_replacement_needs_no_restart() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let upstream = TestUpstream::start("a").await;
    let (a, b) = (self_signed(&["a.example"], false), self_signed(&["b.example", "*.b.example"], false));
    assert_eq!(admin(&cp, Method::POST, "/certificates", upload("a", &a, true)).await.0, StatusCode::CREATED);
    let (status, created) = admin(&cp, Method::POST, "/certificates", upload("b", &b, false)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created.get("key").is_none(), "the private key is never returned: {created}");
    assert_eq!(created["snis"], json!([]), "names are read from the certificate when none are given");
    // A declarative document names the certificates without keys: the stored keys stay.
    let config = json!({"services": [{"name": "app", "targets": [{"url": upstream.url()}]}],
        "routes": [{"name": "r", "service": "app", "paths": ["/"]}, {"name": "secure", "service": "app", "paths": ["/secure"], "https_only": true}],
        "certificates": [{"name": "a", "cert": a.cert_pem, "default": true}, {"name": "b", "cert": b.cert_pem}]});
    let (status, applied) = admin(&cp, Method::PUT, "/config", config).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    let export = cp.admin(Method::GET, "/api/v1/gateways/default/config").send().await.unwrap().text().await.unwrap();
    assert!(!export.contains("PRIVATE KEY"), "exports leave keys out");

    let tls_port = free_port();
    let tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let flag = tls.to_string();
    let dp = DataPlane::start_with_flags(&cp.grpc_url, &cp.cluster_token, "dp", &["--tls-listen", flag.as_str()]).await;
    dp.wait_for_version(applied["version"].as_u64().unwrap()).await;

    let sni_client = client(tls, &["a.example", "b.example", "x.b.example"], &[&a, &b]);
    for (host, expected) in [("a.example", &a), ("b.example", &b), ("x.b.example", &b)] {
        let response = sni_client.get(format!("https://{host}:{tls_port}/hello")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{host}");
        assert_eq!(response.version(), Version::HTTP_2, "{host}: h2 by ALPN");
        assert_eq!(presented(&response), expected.der, "{host} gets its own certificate");
        let echo: Value = response.json().await.unwrap();
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    }

    // Plain HTTP to an https_only route is redirected.
    let plain = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let redirected = plain.get(format!("{}/secure/x?y=1", dp.proxy_url)).header("host", "a.example").send().await.unwrap();
    assert_eq!(redirected.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirected.headers()["location"], "https://a.example/secure/x?y=1");
    assert_eq!(plain.get(format!("{}/other", dp.proxy_url)).send().await.unwrap().status(), StatusCode::OK);
    let forged = plain.get(format!("{}/secure", dp.proxy_url)).header("host", "good@evil.example").send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST, "no redirect is built from a forged Host");

    // Replacing a's certificate takes effect on the next handshake.
    let renewed = self_signed(&["a.example"], false);
    let (status, _) = admin(&cp, Method::PUT, "/certificates/a", upload("a", &renewed, true)).await;
    assert_eq!(status, StatusCode::OK);
    let client = client(tls, &["a.example"], &[&renewed]);
    eventually("the renewed certificate is served", Duration::from_secs(20), || async {
        let response = client.get(format!("https://a.example:{tls_port}/")).send().await.ok()?;
        (presented(&response) == renewed.der).then_some(())
    })
    .await;

    // TLS 1.1 and below are refused (the client offers only TLS 1.1).
    let output = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &flag, "-servername", "a.example", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(said.contains("alert") && !said.contains("Cipher is TLS") && !said.contains("Cipher is ECDHE"), "{said}");
}

#[tokio::test]
async fn certificates_are_checked_on_write() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let (good, other, expired) =
        (self_signed(&["a.example"], false), self_signed(&["a.example"], false), self_signed(&["a.example"], true));
    let cases = [
        (json!({"name": "x", "cert": good.cert_pem, "key": other.key_pem}), "key"),
        (json!({"name": "x", "cert": "not a certificate", "key": good.key_pem}), "cert"),
        (json!({"name": "x", "cert": good.cert_pem, "key": good.key_pem, "snis": ["bad name"]}), "snis[0]"),
        (json!({"name": "x", "cert": expired.cert_pem, "key": expired.key_pem}), "certificates[0].cert"),
        (json!({"name": "x", "cert": good.cert_pem}), "certificates[0].key"),
    ];
    for (body, field) in cases {
        let (status, error) = admin(&cp, Method::POST, "/certificates", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }
}

#[tokio::test]
async fn https_upstreams_are_verified_and_can_require_a_client_certificate() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let server = self_signed(&["localhost"], false);
    let gateway_identity = self_signed(&["portico-gateway"], false);
    let plain = TestUpstream::start_tls("tls", &server, None).await;
    let strict = TestUpstream::start_tls("mtls", &server, Some(&gateway_identity)).await;
    let service = |name: &str, url: String, tls: Value| {
        let mut service = json!({"name": name, "protocol": "https", "targets": [{"url": url}]});
        if !tls.is_null() {
            service["tls"] = tls;
        }
        service
    };
    let trusted = json!({"ca_bundle": server.cert_pem});
    let with_identity =
        json!({"ca_bundle": server.cert_pem, "client_cert": gateway_identity.cert_pem, "client_key": gateway_identity.key_pem});
    let services = json!([
        service("verified", plain.https_url(), trusted.clone()),
        service("system-roots", plain.https_url(), Value::Null),
        service("with-identity", strict.https_url(), with_identity),
        service("without-identity", strict.https_url(), trusted),
    ]);
    let routes: Vec<Value> = ["verified", "system-roots", "with-identity", "without-identity"]
        .iter()
        .map(|name| json!({"name": name, "service": name, "paths": [format!("/{name}")]}))
        .collect();
    let (status, applied) = admin(&cp, Method::PUT, "/config", json!({"services": services, "routes": routes})).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    let dp = DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", "dp", None).await;
    dp.wait_for_version(applied["version"].as_u64().unwrap()).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for (path, expected) in [
        ("/verified", StatusCode::OK),
        ("/system-roots", StatusCode::BAD_GATEWAY),
        ("/with-identity", StatusCode::OK),
        ("/without-identity", StatusCode::BAD_GATEWAY),
    ] {
        let response = http.get(format!("{}{path}", dp.proxy_url)).send().await.unwrap();
        assert_eq!(response.status(), expected, "{path}: {}", response.text().await.unwrap());
    }
    let (status, error) = admin(
        &cp,
        Method::POST,
        "/services",
        json!({"name": "half", "protocol": "https",
        "targets": [{"url": "https://localhost:1"}], "tls": {"client_cert": server.cert_pem}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error["error"]["field"].as_str().unwrap().ends_with("tls.client_key"), "{error}");
    let shown = cp.admin(Method::GET, "/api/v1/gateways/default/services/with-identity").send().await.unwrap().text().await.unwrap();
    assert!(shown.contains("client_cert") && !shown.contains("PRIVATE KEY"), "the client key is write-only: {shown}");
}

#[tokio::test]
async fn the_config_stream_runs_over_mutual_tls_and_refuses_a_node_without_a_certificate() {
    let ca = portico_test_support::tls::TestCa::new();
    let (server, node) = (ca.issue(&["localhost"]), ca.issue(&["dp-1"]));
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ca_pem, server_cert, server_key) =
        (write("ca.pem", &ca.cert_pem), write("cp.pem", &server.cert_pem), write("cp.key", &server.key_pem));
    let (node_cert, node_key) = (write("dp.pem", &node.cert_pem), write("dp.key", &node.key_pem));
    let db = TestDb::sqlite();
    let cp = ControlPlane::start_with_flags(
        &db.url,
        &["--grpc-tls-cert", &server_cert, "--grpc-tls-key", &server_key, "--grpc-client-ca", &ca_pem],
    )
    .await;
    assert!(cp.grpc_url.starts_with("https://"));
    let (status, applied) = admin(&cp, Method::PUT, "/config", json!({"services": [], "routes": []})).await;
    assert_eq!(status, StatusCode::OK, "{applied}");

    let trusted = DataPlane::start_with_flags(
        &cp.grpc_url,
        &cp.cluster_token,
        "dp-1",
        &["--control-plane-ca", &ca_pem, "--control-plane-cert", &node_cert, "--control-plane-key", &node_key],
    )
    .await;
    trusted.wait_for_version(applied["version"].as_u64().unwrap()).await;

    let anonymous = DataPlane::start_with_flags(&cp.grpc_url, &cp.cluster_token, "dp-2", &["--control-plane-ca", &ca_pem]).await;
    eventually("the node without a certificate is refused", Duration::from_secs(20), || async {
        anonymous.logs().contains("config stream failed").then_some(())
    })
    .await;
    assert_eq!(anonymous.version().await, None, "a node without a client certificate gets no config");
    let fleet: Value = cp.admin(Method::GET, "/api/v1/gateways/default/data-planes").send().await.unwrap().json().await.unwrap();
    let nodes: Vec<&str> = fleet["data"].as_array().unwrap().iter().map(|n| n["node_id"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["dp-1"], "{fleet}");
}
