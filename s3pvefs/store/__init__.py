"""The object store: the ObjectStore protocol, S3Store over aiobotocore (with the trio/asyncio bridge), the in-memory store and the fault-injecting wrapper."""
