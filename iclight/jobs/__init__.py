"""Many relights and sequences as jobs: manifests and their ids, runs written atomically, resumable batches, Ray."""
