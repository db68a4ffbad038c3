//! The README's testcontainers recipe ("The image alone, and testcontainers"), as a test:
//! the farm's image started by testcontainers, waited for through its HEALTHCHECK (which
//! asks `/readyz`), a message over SMTP to mx3's mapped port, then the API's mapped port:
//! the delivery is there, and a clock advance with the token is taken.
//!
//! Run by scripts/e2e-docker.sh against the image it built (MXFARM_TEST_IMAGE, default
//! `mxfarm:latest`); it needs a Docker engine and the image present, as nothing is pulled.

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type Failure = Box<dyn std::error::Error>;

#[tokio::test]
async fn the_readme_recipe_starts_the_image_and_reaches_smtp_and_the_api() -> Result<(), Failure> {
    let image = std::env::var("MXFARM_TEST_IMAGE").unwrap_or_else(|_| "mxfarm:latest".into());
    let (name, tag) = image.split_once(':').unwrap_or((image.as_str(), "latest"));

    let farm = GenericImage::new(name, tag)
        .with_exposed_port(2527.tcp())
        .with_exposed_port(8025.tcp())
        .with_wait_for(WaitFor::healthcheck())
        .with_env_var("MXFARM_API_TOKEN", "test")
        .start()
        .await?;
    let host = farm.get_host().await?;
    let mx3 = (host.to_string(), farm.get_host_port_ipv4(2527).await?);
    let api = (host.to_string(), farm.get_host_port_ipv4(8025.tcp()).await?);

    let replies = smtp(&mx3, "alice@aol.test").await?;
    assert!(
        replies.last().is_some_and(|r| r.starts_with("250")),
        "{replies:?}"
    );

    let deliveries = http(&api, "GET", "/api/v1/deliveries", None).await?;
    assert!(deliveries.starts_with("HTTP/1.1 200"), "{deliveries}");
    assert!(
        deliveries.contains("\"recipient\":\"alice@aol.test\""),
        "{deliveries}"
    );
    assert!(
        deliveries.contains("\"outcome\":\"delivered\""),
        "{deliveries}"
    );

    let refused = http(
        &api,
        "POST",
        "/api/v1/clock/advance",
        Some(("wrong", r#"{"by":"6m"}"#)),
    )
    .await?;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let advanced = http(
        &api,
        "POST",
        "/api/v1/clock/advance",
        Some(("test", r#"{"by":"6m"}"#)),
    )
    .await?;
    assert!(advanced.starts_with("HTTP/1.1 200"), "{advanced}");
    Ok(())
}

/// One message to `recipient`; every reply's first line, the last one the final dot's.
async fn smtp(addr: &(String, u16), recipient: &str) -> Result<Vec<String>, Failure> {
    let stream = TcpStream::connect((addr.0.as_str(), addr.1)).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut replies = Vec::new();
    let commands = [
        String::new(),
        "EHLO recipe.test\r\n".into(),
        "MAIL FROM:<me@recipe.test>\r\n".into(),
        format!("RCPT TO:<{recipient}>\r\n"),
        "DATA\r\n".into(),
        "Subject: testcontainers\r\n\r\nhello\r\n.\r\n".into(),
    ];
    for command in commands {
        write.write_all(command.as_bytes()).await?;
        // A reply ends with its line whose code is followed by a space.
        loop {
            let line = lines
                .next_line()
                .await?
                .ok_or("the farm closed the connection")?;
            if line.as_bytes().get(3) != Some(&b'-') {
                replies.push(line);
                break;
            }
        }
    }
    write.write_all(b"QUIT\r\n").await?;
    Ok(replies)
}

/// One HTTP/1.1 request with `Connection: close`; the whole response as text.
async fn http(
    addr: &(String, u16),
    method: &str,
    path: &str,
    token_and_body: Option<(&str, &str)>,
) -> Result<String, Failure> {
    let mut stream = TcpStream::connect((addr.0.as_str(), addr.1)).await?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some((token, body)) = token_and_body {
        request.push_str(&format!(
            "X-Mxfarm-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}
