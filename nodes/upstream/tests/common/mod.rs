//! What the upstream client's test binaries share: a fake upstream on a loopback port.

/// Serve `app` on a free loopback port until the test ends; its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding a test port: {e}"));
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .unwrap_or_else(|e| panic!("test port: {e}"))
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
