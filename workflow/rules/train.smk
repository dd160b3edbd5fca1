# Training: one job per (protocol, dataset, method, seed), and the aggregation-bottleneck probe
# runs. `python -m fedem train` writes its result atomically (temp file + rename): a job killed
# midway leaves no result file, and Snakemake (rerun-incomplete) runs it again next time.
# The params carry the hashes a current result must have: when the code or a run's config
# changes, Snakemake's params trigger re-runs exactly the affected jobs.


rule train:
    input:
        stats=stats_copy_of_run,
    output:
        result=f"{RESULTS}/runs/{{protocol}}/{{dataset}}/{{method}}/seed{{seed}}.json",
        timing=f"{RESULTS}/runs/{{protocol}}/{{dataset}}/{{method}}/seed{{seed}}.timing.json",
    log:
        f"{LOGS}/train/{{protocol}}/{{dataset}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{protocol}}/{{dataset}}/{{method}}/seed{{seed}}.tsv"
    params:
        config_hash=run_config_hash,
        code_hash=method_code_hash,
    threads: WF["threads_per_train_job"]
    resources:
        gpu=WF["gpus_per_train_job"],
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "python -m fedem train --config {CONFIG_FILE} --protocol {wildcards.protocol} "
        "--dataset {wildcards.dataset} --method {wildcards.method} --seed {wildcards.seed} "
        "--out {output.result} --threads {threads} --quiet > {log} 2>&1"


rule probe:
    input:
        stats=stats_copy_of_run,
    output:
        probe=f"{RESULTS}/probes/{{protocol}}/{{dataset}}/{{method}}/seed{{seed}}.json",
        result=f"{RESULTS}/probes/{{protocol}}/{{dataset}}/{{method}}/seed{{seed}}.result.json",
        timing=f"{RESULTS}/probes/{{protocol}}/{{dataset}}/{{method}}/seed{{seed}}.result.timing.json",
    log:
        f"{LOGS}/probe/{{protocol}}/{{dataset}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe/{{protocol}}/{{dataset}}/{{method}}/seed{{seed}}.tsv"
    params:
        config_hash=probe_config_hash,
        code_hash=probe_code_hash,
    threads: WF["threads_per_train_job"]
    resources:
        gpu=WF["gpus_per_train_job"],
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "python -m fedem train --config {CONFIG_FILE} --protocol {wildcards.protocol} "
        "--dataset {wildcards.dataset} --method {wildcards.method} --seed {wildcards.seed} "
        "--probe-out {output.probe} --out {output.result} --threads {threads} --quiet > {log} 2>&1"
