//! A webhook receiver for tests: an HTTP server on loopback that checks every POST's
//! `Trickle-Signature` (with its own HMAC code, not the coordinator's), can be told to fail,
//! and keeps what it accepted.

use hmac::{KeyInit as _, Mac as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The secret the tests configure (`[migration] webhook_secret`).
pub const WEBHOOK_SECRET: &str = "whsec-test-0123456789abcdef";

/// What the test's webhook receiver saw.
#[derive(Default)]
pub struct Receiver {
    /// Refuse every POST with 503 while set.
    pub failing: AtomicBool,
    /// Refuse (500) any POST whose body contains this, always.
    pub poison: Mutex<Option<String>>,
    pub attempts: AtomicUsize,
    pub bad_signatures: AtomicUsize,
    /// Accepted bodies, in arrival order.
    pub accepted: Mutex<Vec<serde_json::Value>>,
    /// POSTs refused because of the poison.
    pub poisoned: AtomicUsize,
}

impl Receiver {
    /// Event id → (type, user id, email), of every accepted event; duplicates counted.
    pub fn delivered(&self) -> (BTreeMap<String, serde_json::Value>, usize) {
        let mut events = BTreeMap::new();
        let mut total = 0;
        for body in self.accepted.lock().unwrap().iter() {
            for event in body["events"].as_array().expect("events") {
                total += 1;
                events.insert(event["id"].as_str().unwrap().to_owned(), event.clone());
            }
        }
        (events, total)
    }

    pub fn delivered_users(&self, kind: &str) -> HashSet<String> {
        self.delivered()
            .0
            .values()
            .filter(|e| e["type"] == kind)
            .map(|e| e["user_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn signature_is_valid(header: Option<&str>, body: &[u8]) -> bool {
    let Some((t, v1)) = header.and_then(|h| h.split_once(",v1=")) else {
        return false;
    };
    let Some(t) = t.strip_prefix("t=") else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let fresh = t
        .parse::<i64>()
        .is_ok_and(|t| (chrono_now() - t).abs() < 300);
    expected == v1 && fresh
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A webhook receiver on loopback; its URL.
pub async fn serve_receiver(receiver: Arc<Receiver>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let receiver = receiver.clone();
                        async move {
                            let signature = request
                                .headers()
                                .get("trickle-signature")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            receiver.attempts.fetch_add(1, Ordering::SeqCst);
                            let status = if !signature_is_valid(signature.as_deref(), &body) {
                                receiver.bad_signatures.fetch_add(1, Ordering::SeqCst);
                                401
                            } else if receiver.failing.load(Ordering::SeqCst) {
                                503
                            } else if receiver
                                .poison
                                .lock()
                                .unwrap()
                                .as_deref()
                                .is_some_and(|p| String::from_utf8_lossy(&body).contains(p))
                            {
                                receiver.poisoned.fetch_add(1, Ordering::SeqCst);
                                500
                            } else {
                                let json: serde_json::Value =
                                    serde_json::from_slice(&body).expect("JSON body");
                                receiver.accepted.lock().unwrap().push(json);
                                200
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/hooks/trickle")
}
