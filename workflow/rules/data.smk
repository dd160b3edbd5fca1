# Data: fetch + verify + preprocess one dataset variant (python -m fedem prepare), and keep a
# copy of its statistics under results/ so that the tables never need the processed data.


rule prepare:
    output:
        npz=f"{PROCESSED}/{{dataset}}/{{variant}}.npz",
        stats=f"{PROCESSED}/{{dataset}}/{{variant}}.stats.json",
    log:
        f"{LOGS}/prepare/{{dataset}}/{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare/{{dataset}}/{{variant}}.tsv"
    params:
        dedupe=dedupe_flag,
    threads: 1
    shell:
        "python -m fedem prepare {wildcards.dataset} {params.dedupe} --config {CONFIG_FILE} > {log} 2>&1"


# ancient: the copy is made once per variant (its name carries the preprocessing version, and
# preparing it is deterministic). A re-prepared dataset is newer than its copy; re-copying it then
# would trip Snakemake 9's ancient() bug (snakemake/snakemake#4166): the train jobs that read the copy
# through ancient() drop out of the plan, and a missing result needs a second `snakemake` call.
rule data_stats:
    input:
        ancient(f"{PROCESSED}/{{dataset}}/{{variant}}.stats.json"),
    output:
        f"{RESULTS}/data_stats/{{dataset}}-{{variant}}.json",
    log:
        f"{LOGS}/data_stats/{{dataset}}-{{variant}}.log",
    shell:
        "python -m fedem.report copy-stats {input} {output} > {log} 2>&1"
