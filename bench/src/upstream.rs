//! The mock upstream: an OpenAI-compatible `POST .../chat/completions` answering every request
//! with the same ~1 KB `chat.completion`, immediately on `/v1/...` and after 50 ms on
//! `/slow/v1/...`. It reads the whole request body (as a real upstream would) and does nothing
//! else, so what it costs is the floor every system measured here shares.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The delay of the `/slow/` prefix: a model that takes 50 ms to answer.
pub const SLOW_DELAY: Duration = Duration::from_millis(50);

/// The fixed answer: a realistic `chat.completion` of about 1 KB.
pub fn completion_body() -> Bytes {
    let content = "The quick brown fox jumps over the lazy dog. ".repeat(16);
    let body = serde_json::json!({
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": 1_763_800_000u64,
        "model": "bench-model",
        "system_fingerprint": "fp_bench",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content.trim_end(), "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 42, "completion_tokens": 160, "total_tokens": 202}
    });
    Bytes::from(body.to_string())
}

/// Serves on `addr` until the process is killed.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    // The harness waits for this line to know the port.
    eprintln!("upstream listening on {}", listener.local_addr()?);
    let body = completion_body();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, body.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(req: Request<Incoming>, body: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    // Read the request as a real upstream does before answering.
    let _ = req.into_body().collect().await;
    let (status, body) = if path.ends_with("/chat/completions") {
        if path.starts_with("/slow/") {
            tokio::time::sleep(SLOW_DELAY).await;
        }
        (StatusCode::OK, body)
    } else {
        (
            StatusCode::NOT_FOUND,
            Bytes::from_static(br#"{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}"#),
        )
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_a_chat_completion_of_about_one_kilobyte() {
        let body = completion_body();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["object"], "chat.completion");
        assert_eq!(value["choices"][0]["finish_reason"], "stop");
        assert!((900..1300).contains(&body.len()), "{} bytes", body.len());
    }
}
