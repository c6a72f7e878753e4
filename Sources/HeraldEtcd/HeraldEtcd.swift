// HeraldEtcd: etcd v3 JSON gateway client. Knows nothing of Herald.
