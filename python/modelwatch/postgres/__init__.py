"""PostgreSQL: connections and locks, the raw schema, roles, the embedded server, binary COPY."""
