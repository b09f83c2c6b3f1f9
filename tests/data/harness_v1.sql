-- A results database written by schema version 1 (results/schema.py at the first commit):
-- one run, one done job with results, one job left 'running' by a run that died.
BEGIN TRANSACTION;
CREATE TABLE curves (
	id INTEGER NOT NULL, 
	job_id INTEGER NOT NULL, 
	step INTEGER NOT NULL, 
	name VARCHAR(100) NOT NULL, 
	value FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE
);
INSERT INTO "curves" VALUES(1,1,1,'loss',3.0);
CREATE TABLE jobs (
	id INTEGER NOT NULL, 
	spec_hash VARCHAR(64) NOT NULL, 
	group_hash VARCHAR(64) NOT NULL, 
	attempt INTEGER NOT NULL, 
	run_id INTEGER, 
	status VARCHAR(16) NOT NULL, 
	spec_json TEXT NOT NULL, 
	model VARCHAR(300) NOT NULL, 
	task VARCHAR(200) NOT NULL, 
	method VARCHAR(100) NOT NULL, 
	method_label VARCHAR(300) NOT NULL, 
	sparsity FLOAT NOT NULL, 
	seed INTEGER NOT NULL, 
	created_at DATETIME NOT NULL, 
	started_at DATETIME, 
	finished_at DATETIME, 
	error TEXT, 
	traceback TEXT, 
	harness_version VARCHAR(50) NOT NULL, 
	versions_json TEXT NOT NULL, 
	protocol_json TEXT, 
	PRIMARY KEY (id), 
	UNIQUE (spec_hash, attempt), 
	FOREIGN KEY(run_id) REFERENCES runs (id)
);
INSERT INTO "jobs" VALUES(1,'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',1,1,'done','{"eval": {}, "method": {"name": "magnitude", "params": {}}, "model": {"name": "tiny-gpt2"}, "seed": 0, "sparsity": 0.5, "task": {"name": "wiki-embedded"}, "train": {}}','tiny-gpt2','wiki-embedded','magnitude','magnitude',0.5,0,'2026-11-29 05:35:00.659514','2026-11-29 05:35:00.669134','2026-11-29 05:35:00.673428',NULL,NULL,'0.1.0','{"python": "3.11"}','{"device": "cpu"}');
INSERT INTO "jobs" VALUES(2,'cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc','bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',1,1,'running','{"eval": {}, "method": {"name": "magnitude", "params": {}}, "model": {"name": "tiny-gpt2"}, "seed": 1, "sparsity": 0.5, "task": {"name": "wiki-embedded"}, "train": {}}','tiny-gpt2','wiki-embedded','magnitude','magnitude',0.5,1,'2026-11-29 05:35:00.685652','2026-11-29 05:35:00.689059',NULL,NULL,NULL,'0.1.0','{"python": "3.11"}',NULL);
CREATE TABLE layer_stats (
	id INTEGER NOT NULL, 
	job_id INTEGER NOT NULL, 
	layer INTEGER NOT NULL, 
	name VARCHAR(100) NOT NULL, 
	value FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE
);
INSERT INTO "layer_stats" VALUES(1,1,0,'kept_neurons',32.0);
CREATE TABLE meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "meta" VALUES('schema_version','1');
CREATE TABLE metrics (
	id INTEGER NOT NULL, 
	job_id INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	split VARCHAR(50) NOT NULL, 
	value FLOAT NOT NULL, 
	higher_is_better BOOLEAN NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE
);
INSERT INTO "metrics" VALUES(1,1,'perplexity','test',42.5,0);
CREATE TABLE neuron_stats (
	id INTEGER NOT NULL, 
	job_id INTEGER NOT NULL, 
	layer INTEGER NOT NULL, 
	neuron INTEGER NOT NULL, 
	sensitivity FLOAT, 
	max_abs_cos FLOAT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE
);
CREATE TABLE runs (
	id INTEGER NOT NULL, 
	matrix_name VARCHAR(200) NOT NULL, 
	matrix_path TEXT NOT NULL, 
	matrix_hash VARCHAR(64) NOT NULL, 
	host VARCHAR(200) NOT NULL, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	PRIMARY KEY (id)
);
INSERT INTO "runs" VALUES(1,'tiny','examples/tiny.yaml','0000000000000000000000000000000000000000000000000000000000000000','vm','2026-11-29 05:35:00.654934',NULL);
CREATE TABLE samples (
	id INTEGER NOT NULL, 
	job_id INTEGER NOT NULL, 
	"index" INTEGER NOT NULL, 
	task VARCHAR(200) NOT NULL, 
	prompt TEXT NOT NULL, 
	reference TEXT NOT NULL, 
	prediction TEXT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE
);
INSERT INTO "samples" VALUES(1,1,0,'wiki-embedded','p','r','q');
CREATE INDEX ix_jobs_group_hash ON jobs (group_hash);
CREATE INDEX ix_jobs_spec_hash ON jobs (spec_hash);
CREATE INDEX ix_jobs_status ON jobs (status);
CREATE INDEX ix_metrics_job_id ON metrics (job_id);
CREATE INDEX ix_layer_stats_job_id ON layer_stats (job_id);
CREATE INDEX ix_neuron_stats_job_id ON neuron_stats (job_id);
CREATE INDEX ix_curves_job_id ON curves (job_id);
CREATE INDEX ix_samples_job_id ON samples (job_id);
COMMIT;
