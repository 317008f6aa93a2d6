"""Scale out: bottleneck extraction and batch prediction on Ray Data, for sets that outgrow one machine.

Extraction is the only step whose cost grows with the data, so it is the only one handed to a distributed
engine: Ray tasks read and decode images with the one decode path (`pipeline.images`), a pool of actors
(one backbone each) runs the forward pass, and each batch of vectors lands as one Parquet shard. The head
then trains on the shards streamed with tf.data, in bounded memory. Ray is an optional extra
(`requirements-scale.txt`); nothing outside this package imports it.

Modules, in the order data flows:
    cluster     connect to Ray (local or `--ray_address`), size the actor pool from the cluster's resources
    storage     local folders and pyarrow-filesystem URIs (s3://, gs://, ...): listing, reading, fast failure
    shards      Parquet bottleneck shards (key, vector): atomic writes, the keys already done, reading back
    extract     the Ray Data job: read+decode tasks → backbone actors → shards (resumable)
    stream      training a head from shards with tf.data, in the memory `StreamLimits` sets
    run         `train --engine ray`: one run start to finish, in a run folder as `pipeline.retrain` keeps one
    batch_predict  `predict --engine ray`: a run's model.keras over a folder or URI, to CSV or Parquet
    commands    what the CLI's `--engine ray` runs
"""
