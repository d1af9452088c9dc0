//! The quota methods against a real server started in-process (no sandbox is started, so no
//! image is needed).

use sandpit_client::Client;
use sandpit_client::protocol::ErrorCode;
use sandpit_client::protocol::control::{CreateSandboxRequest, Limits};
use sandpit_client::protocol::quota::TenantQuota;
use sandpit_server::{ServeConfig, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_methods_read_set_and_reset_and_refusals_decode() {
    let data = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::new(data.path().join("data"));
    config.listen = ([127, 0, 0, 1], 0).into();
    config.images_dir = data.path().join("images");
    config.admin_key = Some("quota-admin".into());
    config.max_limits.memory_mb = Some(2048);
    let server = Server::start(config).await.unwrap();
    let url = format!("http://{}", server.addr());
    let key: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/keys"))
        .bearer_auth("quota-admin")
        .json(&serde_json::json!({"tenant": "acme"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin = Client::new(&url, "quota-admin").unwrap();
    let tenant = Client::new(&url, key["key"].as_str().unwrap()).unwrap();

    let own = tenant.quota().await.unwrap();
    assert_eq!(own.tenant, "acme");
    assert!(own.is_default);
    assert_eq!(own.caps.memory_mb, 2048);
    let quota = TenantQuota {
        sandboxes: Some(2),
        running_sandboxes: Some(1),
        ..TenantQuota::default()
    };
    let set = admin.set_tenant_quota("acme", &quota).await.unwrap();
    assert_eq!(set.quota, quota);
    assert!(!set.is_default);
    assert_eq!(tenant.tenant_quota("acme").await.unwrap().quota, quota);

    let refused = tenant
        .set_tenant_quota("acme", &TenantQuota::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Unauthorized));
    let too_big = CreateSandboxRequest {
        id: Some("big".into()),
        limits: Some(Limits {
            memory_mb: Some(4096),
            ..Limits::default()
        }),
        ..CreateSandboxRequest::default()
    };
    let refused = tenant.create(&too_big).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::LimitExceeded));

    let reset = admin.reset_tenant_quota("acme").await.unwrap();
    assert!(reset.is_default);
    assert_eq!(reset.quota, TenantQuota::default());
    server.shutdown().await.unwrap();
}
