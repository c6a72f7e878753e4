// HeraldKafka: safe async Swift over librdkafka. Knows nothing of Herald.
