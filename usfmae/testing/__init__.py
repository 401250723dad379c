"""Fixtures for tests, benchmarks and the demo (not used by the pipeline itself).

synthetic  seeded synthetic B-mode scans with exact ground truth (lesion masks, labelled folders, shards' input)
annotated  synthetic scans with burned-in scanner annotations and a truth mask per annotation kind
corpus     small input corpora of every kind (PNG, 16-bit PNG, AVI cine, DICOM, NIfTI) for build tests
ray_local  a private loopback-only Ray head, started and stopped by pid
s3proxy    a loopback proxy in front of an S3 endpoint that injects 500/503s and stalls and counts GETs and bytes
hosts      simulated hosts: network namespaces on a bridge, node-local /node and /dev/shm, S3 on the bridge
"""
