"""Moving bytes: the reader (and its prefetcher), the uploader, streaming uploads, the object writer, keys left behind."""
