//! meshd's TokenReview authenticator against the fake API server that kube-source's tests use
//! (`kube-source/tests/support/apiserver.rs`): accepted, denied, unreachable, cached.

#[path = "../../kube-source/tests/support/apiserver.rs"]
mod apiserver;

use std::sync::Arc;
use std::time::Duration;

use apiserver::{ApiServer, TokenUser};
use control_plane::auth::{AuthError, Authenticator, Caller, LocalTokens};
use control_plane::token_review::{LocalThenReview, TokenReview};

fn ztunnel_token() -> TokenUser {
    TokenUser {
        namespace: "istio-system".into(),
        service_account: "ztunnel".into(),
        audiences: vec!["istio-ca".into()],
        pod: Some("ztunnel-abcde".into()),
        node: Some("node-a".into()),
    }
}

async fn server_with_tokens() -> ApiServer {
    let server = ApiServer::start().await;
    server.with(|c| {
        c.tokens.insert("good".into(), ztunnel_token());
        c.tokens.insert(
            "unbound".into(),
            TokenUser {
                namespace: "shop".into(),
                service_account: "cart".into(),
                audiences: vec!["istio-ca".into(), "https://kubernetes.default.svc".into()],
                pod: None,
                node: None,
            },
        );
        c.tokens.insert(
            "api-only".into(),
            TokenUser {
                audiences: vec!["https://kubernetes.default.svc".into()],
                ..ztunnel_token()
            },
        );
    });
    server
}

#[tokio::test]
async fn accepted_tokens_name_their_pod_and_node_and_are_cached() {
    let server = server_with_tokens().await;
    let review = TokenReview::new(server.client());
    let caller = review.review("good").await.expect("accepted");
    assert_eq!(
        caller,
        Caller {
            namespace: "istio-system".into(),
            service_account: "ztunnel".into(),
            pod: Some("ztunnel-abcde".into()),
            node: Some("node-a".into()),
        }
    );
    let unbound = review.review("unbound").await.expect("accepted");
    assert_eq!(unbound.account(), "shop/cart");
    assert_eq!((unbound.pod, unbound.node), (None, None));
    assert_eq!(server.with(|c| c.token_reviews), 2);

    for _ in 0..5 {
        assert_eq!(review.review("good").await, Ok(caller.clone()));
    }
    assert_eq!(
        server.with(|c| c.token_reviews),
        2,
        "accepted tokens are not reviewed again within the TTL"
    );

    let uncached = TokenReview::with_cache(server.client(), Duration::ZERO, 0);
    for _ in 0..3 {
        uncached.review("good").await.expect("accepted");
    }
    assert_eq!(server.with(|c| c.token_reviews), 5);
}

#[tokio::test]
async fn denied_tokens_are_rejected_and_not_cached() {
    let server = server_with_tokens().await;
    let review = TokenReview::new(server.client());
    for token in ["forged", "forged"] {
        match review.review(token).await {
            Err(AuthError::Rejected(reason)) => {
                assert!(reason.contains("invalid bearer token"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        server.with(|c| c.token_reviews),
        2,
        "refusals are asked again"
    );

    // Issued for the API server only: the API server itself refuses it for istio-ca.
    match review.review("api-only").await {
        Err(AuthError::Rejected(reason)) => {
            assert!(
                reason.contains("is invalid for the target audiences"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_api_server_that_cannot_answer_makes_the_token_unavailable() {
    // Nothing listens.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let uri = format!("http://{addr}").parse().expect("uri");
    let client = kube::Client::try_from(kube::Config::new(uri)).expect("client");
    let review = TokenReview::new(client);
    let started = std::time::Instant::now();
    match review.review("good").await {
        Err(AuthError::Unavailable(reason)) => assert!(!reason.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    // Reachable, but meshd may not create tokenreviews.
    let server = server_with_tokens().await;
    server.with(|c| c.token_review_forbidden = true);
    let review = TokenReview::new(server.client());
    match review.review("good").await {
        Err(AuthError::Unavailable(reason)) => {
            assert!(reason.contains("system:auth-delegator"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn meshd_tokens_are_checked_locally_and_others_reviewed() {
    let server = server_with_tokens().await;
    let local = Arc::new(LocalTokens::from_secret(&[9; 32]));
    let auth = LocalThenReview {
        local: local.clone(),
        review: TokenReview::new(server.client()),
    };
    let minted = local.mint_node("istio-system", "ztunnel", "node-b");
    let caller = auth.authenticate(&minted).await.expect("meshd's own token");
    assert_eq!(caller.node.as_deref(), Some("node-b"));
    assert_eq!(
        server.with(|c| c.token_reviews),
        0,
        "no review for meshd's own tokens"
    );

    let caller = auth.authenticate("good").await.expect("reviewed");
    assert_eq!(caller.node.as_deref(), Some("node-a"));
    let other_meshd = LocalTokens::from_secret(&[8; 32]).mint_pod("shop", "cart", "cart-0");
    assert!(matches!(
        auth.authenticate(&other_meshd).await,
        Err(AuthError::Rejected(_))
    ));
    assert_eq!(server.with(|c| c.token_reviews), 2);
}
