"""The request path every front end shares: options parsed once (`options`), models loaded
once per process (`pool`), and one removal use case (`removal`): decode, infer under the
device lock, finish, encode, with the time of each step."""
