DROP TABLE IF EXISTS ingress_outcomes;
