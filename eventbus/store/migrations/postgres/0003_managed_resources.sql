-- Sources and subscriptions the config file manages: the declared name (their identity across restarts), the
-- resource it made, and a fingerprint of the declaration last applied. The API refuses to change what is listed.
CREATE TABLE managed_resources (
    resource TEXT NOT NULL,  -- 'source' or 'subscription'
    name TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (resource, name)
);
CREATE INDEX managed_resources_id ON managed_resources (resource_id);
