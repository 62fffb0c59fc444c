-- The example app's business table (POST /api/orders/:orderId/status updates it and enqueues an
-- orderStatus message in the same transaction).
CREATE TABLE example_orders (
  order_id    text PRIMARY KEY,
  user_id     text        NOT NULL,
  status      text        NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);
