"""The Spark application scripts/bench-spark times on the lab's head node: what the checks and the
notebooks run (an RDD sum over the workers, a DataFrame group-by, a pandas-on-Spark sum), with the
client configuration of the node (SPARK_CONF_DIR) and the properties given as KEY=VALUE arguments.
Prints one JSON line: its wall time, whether every answer is the known one, the hosts that computed.
"""

import json
import socket
import sys
import time

N = 1_000_000
SUM_SQUARES = N * (N + 1) * (2 * N + 1) // 6


def main(argv: list[str]) -> int:
    start = time.perf_counter()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("clusterforge-bench-spark")
    for item in argv:
        key, _, value = item.partition("=")
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.conf.set("spark.sql.shuffle.partitions", "8")
    rdd = spark.sparkContext.parallelize(range(1, N + 1), 8)
    total = rdd.map(lambda i: i * i).sum()
    hosts = sorted(set(rdd.mapPartitions(lambda part: [socket.gethostname()]).collect()))
    grouped = spark.range(0, 100_000).selectExpr("id % 10 AS key").groupBy("key").count().collect()
    counts = sorted({row["count"] for row in grouped})
    import pyspark.pandas as ps  # noqa: F401  (pandas-on-Spark, as notebook 13 uses it)

    frame = spark.range(1, N + 1, numPartitions=8).pandas_api()
    frame["square"] = frame["id"] * frame["id"]
    pandas_total = int(frame["square"].sum())
    spark.stop()
    ok = total == SUM_SQUARES and pandas_total == SUM_SQUARES and counts == [10_000]
    print(json.dumps({"wall_s": round(time.perf_counter() - start, 2), "ok": ok, "hosts": hosts}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
