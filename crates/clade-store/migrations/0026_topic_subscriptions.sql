-- Agents' subscriptions to topics: what an agent publishes on a topic is delivered to every
-- other agent of its tenant subscribed to it, each as a message.
CREATE TABLE topic_subscriptions (
    agent_id BLOB NOT NULL,
    topic TEXT NOT NULL,
    tenant_id BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, topic)
);
CREATE INDEX topic_subscriptions_by_topic ON topic_subscriptions (tenant_id, topic);
