use authaudit_mongowire::store::Store;
use bson::doc;
use std::time::Instant;
fn main() {
    let mut s = Store::default();
    s.create_indexes("d", &doc! {"createIndexes": "auth_log", "indexes": [{"key": {"tenant_id": 1, "seq": 1}, "name": "tenant_seq", "unique": true}, {"key": {"tenant_id": 1, "occurred_at": 1}, "name": "t"}]}).unwrap();
    let mk = |i: i64| doc! {"_id": format!("6d1c0c8e-0000-4000-8000-{i:012}"), "tenant_id": format!("tenant-{}", i % 64), "seq": i, "event_type": "login_failed", "user_id": "user1", "ip": "10.1.1.1", "metadata": {"reason": "x", "_authaudit": {"lockout": {"failures_in_window": 1}}}, "link_sha256": "ab".repeat(32), "digest_sha512": "cd".repeat(64), "digest_sha3_256": "ef".repeat(32)};
    for round in 0..5 {
        let docs: Vec<bson::Document> = (0..5000).map(|i| mk(round * 5000 + i)).collect();
        let cmd = doc! {"insert": "auth_log", "documents": docs, "ordered": false};
        let t = Instant::now();
        s.insert("d", cmd, None).unwrap();
        println!("insert 5000: {:?}", t.elapsed());
    }
    for round in 0..3i64 {
        let ups: Vec<bson::Document> = (0..2000i64).map(|i| doc! {"q": {"_id": format!("t/u{i}"), "$or": [{"v": {"$lt": round}}, {"v": round, "vi": {"$lt": 1i64}}]}, "u": {"$set": {"v": round, "vi": 1i64, "tenant_id": "t", "user_id": format!("u{i}"), "failure_count": 3i64, "locked": false}}, "upsert": true}).collect();
        let cmd = doc! {"update": "lockout_state", "updates": ups, "ordered": false};
        let t = Instant::now();
        s.update("d", &cmd, None).unwrap();
        println!("update 2000: {:?}", t.elapsed());
    }
}
