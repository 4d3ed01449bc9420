# Shared by the bench scripts (sourced, not run): removing a run's RabbitMQ topology.

# Deletes the queues and exchanges Herald declared under PREFIX on the local broker; silent, never fails.
# rabbitmqctl has no delete_exchange, so exchanges go through the broker's own function (RabbitMQ 3.x, 4.x).
delete_rabbitmq_topology() { # PREFIX
  local prefix=$1 name
  for name in fanout deliveries deliveries.scheduled deliveries.dead; do
    rabbitmqctl -q delete_queue "$prefix.$name" >/dev/null 2>&1 || true
  done
  for name in events deliveries deliveries.dead; do
    rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$prefix.$name\">>), false, <<\"herald-bench\">>)." >/dev/null 2>&1 || true
  done
}
