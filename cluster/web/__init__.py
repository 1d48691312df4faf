"""lvsctl web: a live status page of the cluster, pushed from one etcd watch."""
