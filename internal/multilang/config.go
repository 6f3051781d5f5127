package multilang

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shardline/shardline/kcl"
)

// Config is what the daemon takes from a MultiLangDaemon .properties file.
type Config struct {
	// Executable is executableName: the child command line, split on
	// spaces as the Java daemon does.
	Executable string
	// StreamName and StreamARN identify the stream (streamName, streamArn).
	StreamName, StreamARN string
	// ApplicationName is applicationName; TableName is tableName (default:
	// the application name); WorkerID is workerId.
	ApplicationName, TableName, WorkerID string
	// InitialPosition comes from initialPositionInStream and, for
	// AT_TIMESTAMP, initialPositionInStreamExtended (epoch seconds).
	InitialPosition kcl.InitialPosition
	// Region is regionName; DynamoDBRegion is dynamoDBRegionName.
	Region, DynamoDBRegion string
	// KinesisEndpoint and DynamoDBEndpoint are kinesisEndpoint and
	// dynamoDBEndpoint.
	KinesisEndpoint, DynamoDBEndpoint string
	// Credentials and DynamoDBCredentials are AWSCredentialsProvider and
	// AWSCredentialsProviderDynamoDB (default: the SDK's default chain).
	Credentials, DynamoDBCredentials Credentials
	// ProcessingLanguage is processingLanguage (informative only).
	ProcessingLanguage string
	// MaxRecords is maxRecords; 0: the worker's default.
	MaxRecords int
	// IdleTimeBetweenReads is idleTimeBetweenReadsInMillis.
	IdleTimeBetweenReads time.Duration
	// FailoverTime is failoverTimeMillis, the lease duration.
	FailoverTime time.Duration
	// ChildTimeout is timeoutInSeconds: the longest a child may stay silent
	// during an action.
	ChildTimeout time.Duration
	// ShutdownGrace is shutdownGraceMillis: how long a graceful stop may
	// take before processors are cancelled.
	ShutdownGrace time.Duration

	// Ignored lists the keys the Java daemon accepts that have no effect
	// here, with why.
	Ignored []string
	// Unknown lists keys neither daemon knows.
	Unknown []string

	timestampSeen bool
}

// Command returns the child's argv: Executable split on spaces, empty
// parts dropped (the Java daemon splits on single spaces).
func (c *Config) Command() []string { return strings.Fields(c.Executable) }

// Credentials names an AWS credentials provider of the Java KCL's
// configuration. Kind is "" (default chain), "default", "env" or "profile"
// (with Profile).
type Credentials struct {
	Kind    string
	Profile string
	// Raw is the value as written.
	Raw string
}

type setter func(c *Config, v string) error

// knownKeys maps the keys understood to what they set.
var knownKeys = map[string]setter{
	"executableName":  func(c *Config, v string) error { c.Executable = v; return nil },
	"streamName":      func(c *Config, v string) error { c.StreamName = v; return nil },
	"streamArn":       func(c *Config, v string) error { c.StreamARN = v; return nil },
	"applicationName": func(c *Config, v string) error { c.ApplicationName = v; return nil },
	"tableName":       func(c *Config, v string) error { c.TableName = v; return nil },
	"workerId":        func(c *Config, v string) error { c.WorkerID = v; return nil },
	"regionName":      func(c *Config, v string) error { c.Region = v; return nil },
	"dynamoDBRegionName": func(c *Config, v string) error {
		c.DynamoDBRegion = v
		return nil
	},
	"kinesisEndpoint":    func(c *Config, v string) error { c.KinesisEndpoint = v; return nil },
	"dynamoDBEndpoint":   func(c *Config, v string) error { c.DynamoDBEndpoint = v; return nil },
	"processingLanguage": func(c *Config, v string) error { c.ProcessingLanguage = v; return nil },
	"initialPositionInStream": func(c *Config, v string) error {
		switch strings.ToUpper(v) {
		case kcl.TrimHorizon.SequenceNumber:
			c.InitialPosition = kcl.StartAtTrimHorizon()
		case kcl.Latest.SequenceNumber:
			c.InitialPosition = kcl.StartAtLatest()
		case kcl.AtTimestamp.SequenceNumber:
			c.InitialPosition = kcl.StartAtTimestamp(c.InitialPosition.Timestamp())
		default:
			return fmt.Errorf("want TRIM_HORIZON, LATEST or AT_TIMESTAMP, not %q", v)
		}
		return nil
	},
	"initialPositionInStreamExtended": func(c *Config, v string) error {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs < 0 {
			return fmt.Errorf("want a timestamp in seconds since the epoch, not %q", v)
		}
		c.InitialPosition = kcl.StartAtTimestamp(time.Unix(secs, 0).UTC())
		c.timestampSeen = true
		return nil
	},
	"maxRecords": func(c *Config, v string) error {
		n, err := positiveInt(v)
		if err == nil && n > 10000 {
			err = fmt.Errorf("at most 10000, not %d", n)
		}
		c.MaxRecords = n
		return err
	},
	"idleTimeBetweenReadsInMillis": func(c *Config, v string) error {
		d, err := millis(v)
		c.IdleTimeBetweenReads = d
		return err
	},
	"failoverTimeMillis": func(c *Config, v string) error {
		d, err := millis(v)
		c.FailoverTime = d
		return err
	},
	"shutdownGraceMillis": func(c *Config, v string) error {
		d, err := millis(v)
		c.ShutdownGrace = d
		return err
	},
	"timeoutInSeconds": func(c *Config, v string) error {
		n, err := positiveInt(v)
		c.ChildTimeout = time.Duration(n) * time.Second
		return err
	},
	"AWSCredentialsProvider": func(c *Config, v string) error {
		cr, err := parseCredentials(v)
		c.Credentials = cr
		return err
	},
	"AWSCredentialsProviderDynamoDB": func(c *Config, v string) error {
		cr, err := parseCredentials(v)
		c.DynamoDBCredentials = cr
		return err
	},
}

// ignoredKeys are keys of the Java daemon that have no effect here, with
// the reason given in the warning.
var ignoredKeys = map[string]string{
	"AWSCredentialsProviderCloudWatch":                 "no CloudWatch metrics: use -metrics-addr (Prometheus)",
	"cloudWatchRegionName":                             "no CloudWatch metrics: use -metrics-addr (Prometheus)",
	"metricsLevel":                                     "no CloudWatch metrics: use -metrics-addr (Prometheus)",
	"metricsEnabledDimensions":                         "no CloudWatch metrics: use -metrics-addr (Prometheus)",
	"metricsBufferTimeMillis":                          "no CloudWatch metrics: use -metrics-addr (Prometheus)",
	"metricsMaxQueueSize":                              "no CloudWatch metrics: use -metrics-addr (Prometheus)",
	"retrievalMode":                                    "shards are always read by polling (GetRecords)",
	"maxActiveThreads":                                 "each shard has its own goroutine and child",
	"maxLeaseRenewalThreads":                           "leases are renewed in one batch loop",
	"maxGetRecordsThreadPool":                          "not applicable",
	"retryGetRecordsInSeconds":                         "not applicable",
	"callProcessRecordsEvenForEmptyRecordList":         "empty batches are not delivered",
	"cleanupLeasesUponShardCompletion":                 "finished leases are always cleaned up once their children progressed",
	"ignoreUnexpectedChildShards":                      "not applicable",
	"maxLeasesForWorker":                               "leases are balanced evenly across workers",
	"maxLeasesToStealAtOneTime":                        "leases are balanced evenly across workers",
	"initialLeaseTableReadCapacity":                    "the lease table is created on demand (pay per request)",
	"initialLeaseTableWriteCapacity":                   "the lease table is created on demand (pay per request)",
	"shardSyncIntervalMillis":                          "the worker's default (60s) applies",
	"parentShardPollIntervalMillis":                    "the worker's default applies",
	"listShardsBackoffTimeInMillis":                    "the worker's default applies",
	"maxListShardsRetryAttempts":                       "the worker's default applies",
	"taskBackoffTimeMillis":                            "failed batches are retried with exponential backoff",
	"shardPrioritization":                              "not applicable",
	"skipShardSyncAtWorkerInitializationIfLeasesExist": "not applicable",
	"schedulerInitializationBackoffTimeMillis":         "not applicable",
	"logWarningForTaskAfterMillis":                     "not applicable",
	"validateSequenceNumberBeforeCheckpointing":        "checkpoints are always validated against the delivered records",
	"userAgent":                                        "not applicable",
	"clientVersionConfig":                              "the lease protocol is Shardline's; KCL 3.x coordinator tables are not used",
	"enablePriorityLeaseAssignment":                    "leases are balanced evenly across workers",
	"leaseTableDeletionProtectionEnabled":              "set it on the table directly",
	"leaseTablePitrEnabled":                            "set it on the table directly",
}

// ignoredPrefixes are nested keys of the Java daemon's client and
// sub-configuration beans, none of which has an effect here.
var ignoredPrefixes = []string{"kinesisClient.", "dynamoDbClient.", "cloudWatchClient.", "fanoutConfig.",
	"pollingConfig.", "coordinatorStateConfig.", "coordinatorStateTableConfig.", "gracefulLeaseHandoffConfig.",
	"workerUtilizationAwareAssignmentConfig.", "workerMetricsTableConfig."}

// ReadConfig parses a .properties file into a Config. Keys that the Java
// daemon knows but that have no effect here are listed in Ignored, keys
// nobody knows in Unknown; a malformed value of a known key is an error.
func ReadConfig(r io.Reader) (*Config, error) {
	props, err := ParseProperties(r)
	if err != nil {
		return nil, err
	}
	c := &Config{}
	var errs []error
	for _, p := range props {
		if err := c.Set(p.Key, p.Value); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", p.Line, err))
		}
	}
	return c, errors.Join(errs...)
}

// Set applies one property.
func (c *Config) Set(key, value string) error {
	k := key
	// As in the Java daemon, the credentials keys are case-insensitive.
	if lk := strings.ToLower(key); strings.HasPrefix(lk, "awscredentialsprovider") {
		k = "AWSCredentialsProvider" + key[len("awscredentialsprovider"):]
		if strings.EqualFold(k, "AWSCredentialsProviderDynamoDB") {
			k = "AWSCredentialsProviderDynamoDB"
		}
		if strings.EqualFold(k, "AWSCredentialsProviderCloudWatch") {
			k = "AWSCredentialsProviderCloudWatch"
		}
	}
	if set, ok := knownKeys[k]; ok {
		if err := set(c, strings.TrimSpace(value)); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		return nil
	}
	if why, ok := ignoredKeys[k]; ok {
		c.Ignored = append(c.Ignored, key+" ("+why+")")
		return nil
	}
	for _, p := range ignoredPrefixes {
		if strings.HasPrefix(k, p) {
			c.Ignored = append(c.Ignored, key+" (client and sub-configuration settings are not applied)")
			return nil
		}
	}
	if !slices.Contains(c.Unknown, key) {
		c.Unknown = append(c.Unknown, key)
	}
	return nil
}

// Validate checks that the configuration can run a daemon.
func (c *Config) Validate() error {
	var errs []string
	if c.Executable == "" {
		errs = append(errs, "executableName is required")
	}
	if c.ApplicationName == "" {
		errs = append(errs, "applicationName is required")
	}
	if c.StreamName == "" && c.StreamARN == "" {
		errs = append(errs, "streamName or streamArn is required")
	}
	if c.StreamARN != "" && !strings.HasPrefix(c.StreamARN, "arn:") {
		errs = append(errs, fmt.Sprintf("streamArn %q is not an ARN", c.StreamARN))
	}
	if c.InitialPosition.Sequence() == kcl.AtTimestamp && !c.timestampSeen && c.InitialPosition.Timestamp().IsZero() {
		errs = append(errs, "initialPositionInStream AT_TIMESTAMP needs initialPositionInStreamExtended (epoch seconds)")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", kcl.ErrInvalidConfig, strings.Join(errs, "; "))
	}
	return nil
}

// parseCredentials reads a provider list as the Java daemon accepts it:
// class names (simple or qualified), comma-separated, arguments after '|'.
// The first provider this daemon supports is used.
func parseCredentials(v string) (Credentials, error) {
	var unsupported []string
	for part := range strings.SplitSeq(v, ",") {
		fields := strings.Split(strings.TrimSpace(part), "|")
		name := fields[0]
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			name = name[i+1:]
		}
		switch name {
		case "DefaultCredentialsProvider", "DefaultAWSCredentialsProviderChain",
			"InstanceProfileCredentialsProvider", "ContainerCredentialsProvider",
			"EC2ContainerCredentialsProviderWrapper", "WebIdentityTokenFileCredentialsProvider":
			// The SDK's default chain covers these sources.
			return Credentials{Kind: "default", Raw: v}, nil
		case "EnvironmentVariableCredentialsProvider", "EnvironmentVariablesCredentialsProvider":
			return Credentials{Kind: "env", Raw: v}, nil
		case "ProfileCredentialsProvider":
			cr := Credentials{Kind: "profile", Raw: v}
			if len(fields) > 1 {
				cr.Profile = fields[1]
			}
			return cr, nil
		case "":
		default:
			unsupported = append(unsupported, fields[0])
		}
	}
	return Credentials{Raw: v}, fmt.Errorf("unsupported credentials provider %s (supported: DefaultCredentialsProvider, "+
		"EnvironmentVariableCredentialsProvider, ProfileCredentialsProvider|name; for assumed roles use a profile "+
		"with role_arn or AWS_ROLE_ARN)", strings.Join(unsupported, ", "))
}

func positiveInt(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("want a positive integer, not %q", v)
	}
	return n, nil
}

func millis(v string) (time.Duration, error) {
	n, err := positiveInt(v)
	return time.Duration(n) * time.Millisecond, err
}
