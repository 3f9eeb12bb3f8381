"""eshop: the reference system from the problem statement, traced by tracebridge without a
line of tracing code in its business logic (the one exception: ``order.id`` goes into baggage
where the order is created).

Every service is its own process (``python -m eshop.<service>``), configured only by the
environment (:mod:`eshop.config`), so the same code runs under ``tracebridge demo`` on one
machine and as Deployments in ``deploy/k8s/``.
"""
