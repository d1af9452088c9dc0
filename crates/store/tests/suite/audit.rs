use sandpit_store::{AuditRecord, MAX_AUDIT_PER_TENANT};

use super::Fixture;

fn record(tenant: &str, n: usize) -> AuditRecord {
    AuditRecord {
        seq: 0,
        tenant: tenant.into(),
        at_ms: n as i64,
        actor: "k".into(),
        action: "sandbox.create".into(),
        target: format!("s{n}"),
        result: "ok".into(),
        detail: None,
    }
}

async fn audit_log_is_per_tenant_newest_first_paged_and_bounded(f: &Fixture) {
    let store = f.open().await;
    for n in 0..MAX_AUDIT_PER_TENANT + 5 {
        store.append_audit(&record("a", n)).await.unwrap();
    }
    store.append_audit(&record("b", 0)).await.unwrap();

    let all = store.list_audit("a", None, 5000).await.unwrap();
    assert_eq!(all.len(), MAX_AUDIT_PER_TENANT, "bounded per tenant");
    assert_eq!(all[0].target, format!("s{}", MAX_AUDIT_PER_TENANT + 4));
    assert_eq!(all.last().unwrap().target, "s5", "the oldest went first");
    assert_eq!(store.list_audit("b", None, 10).await.unwrap().len(), 1);

    let page = store.list_audit("a", Some(all[1].seq), 2).await.unwrap();
    assert_eq!(page, all[2..4].to_vec());
}

crate::both_backends!(audit_log_is_per_tenant_newest_first_paged_and_bounded,);
