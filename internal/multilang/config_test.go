package multilang

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shardline/shardline/kcl"
)

func TestParseProperties(t *testing.T) {
	in := "# comment\n" +
		"! another comment\n" +
		"   \n" +
		"a=1\n" +
		"b : two words \n" +
		"c three\n" +
		"  d=x\\\n" +
		"     y\\\n" +
		"  z\n" +
		"e\n" +
		"f=tab\\there\\u0041\\=\\\\\n" +
		"key\\ with\\ spaces=v\n" +
		"g==h\n"
	props, err := ParseProperties(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range props {
		got = append(got, p.Key+"|"+p.Value)
	}
	want := []string{"a|1", "b|two words ", "c|three", "d|xyz", "e|", "f|tab\thereA=\\", "key with spaces|v", "g|=h"}
	if !slices.Equal(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if props[3].Line != 7 || props[4].Line != 10 {
		t.Errorf("lines %d %d, want 7 10", props[3].Line, props[4].Line)
	}
	if _, err := ParseProperties(strings.NewReader("a=\\u12\n")); err == nil {
		t.Error("a malformed \\u escape was accepted")
	}
}

const sampleProperties = `
executableName = node sample_kcl_app.js
streamName = kclnodejssample
applicationName = kclnodejssample
AWSCredentialsProvider = DefaultCredentialsProvider
processingLanguage = nodejs/20
initialPositionInStream = TRIM_HORIZON
regionName = us-west-2
maxRecords = 500
idleTimeBetweenReadsInMillis = 250
failoverTimeMillis = 15000
timeoutInSeconds = 45
shutdownGraceMillis = 20000
kinesisEndpoint = http://127.0.0.1:4568
dynamoDBEndpoint = http://127.0.0.1:8000
metricsLevel = NONE
maxLeasesForWorker = 4
kinesisClient.maxConcurrency = 10
`

func TestReadConfig(t *testing.T) {
	c, err := ReadConfig(strings.NewReader(sampleProperties + "streamNmae = typo\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Command(); !slices.Equal(got, []string{"node", "sample_kcl_app.js"}) {
		t.Errorf("Command = %q", got)
	}
	if c.StreamName != "kclnodejssample" || c.ApplicationName != "kclnodejssample" || c.Region != "us-west-2" ||
		c.ProcessingLanguage != "nodejs/20" || c.KinesisEndpoint != "http://127.0.0.1:4568" ||
		c.DynamoDBEndpoint != "http://127.0.0.1:8000" {
		t.Errorf("config = %+v", c)
	}
	if c.InitialPosition != kcl.StartAtTrimHorizon() || c.MaxRecords != 500 ||
		c.IdleTimeBetweenReads != 250*time.Millisecond || c.FailoverTime != 15*time.Second ||
		c.ChildTimeout != 45*time.Second || c.ShutdownGrace != 20*time.Second {
		t.Errorf("config = %+v", c)
	}
	if c.Credentials.Kind != "default" {
		t.Errorf("credentials = %+v", c.Credentials)
	}
	if len(c.Ignored) != 3 {
		t.Errorf("ignored = %q, want metricsLevel, maxLeasesForWorker and kinesisClient.maxConcurrency", c.Ignored)
	}
	if !slices.Equal(c.Unknown, []string{"streamNmae"}) {
		t.Errorf("unknown = %q", c.Unknown)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}

func TestReadConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, props, want string }{
		{"bad position", "initialPositionInStream = OLDEST\n", "initialPositionInStream"},
		{"bad number", "maxRecords = many\n", "maxRecords"},
		{"too many records", "maxRecords = 20000\n", "at most 10000"},
		{"negative millis", "failoverTimeMillis = -5\n", "failoverTimeMillis"},
		{"bad timestamp", "initialPositionInStreamExtended = yesterday\n", "initialPositionInStreamExtended"},
		{"sts", "AWSCredentialsProvider = StsAssumeRoleCredentialsProvider|arn:aws:iam::1:role/r|s\n", "unsupported credentials provider"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadConfig(strings.NewReader(tc.props))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	c, err := ReadConfig(strings.NewReader("initialPositionInStream = AT_TIMESTAMP\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if !errors.Is(err, kcl.ErrInvalidConfig) {
		t.Fatalf("Validate = %v", err)
	}
	for _, want := range []string{"executableName", "applicationName", "streamName or streamArn", "initialPositionInStreamExtended"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}

	c, err = ReadConfig(strings.NewReader("executableName=python3 app.py\napplicationName=a\n" +
		"streamArn=arn:aws:kinesis:us-east-1:123456789012:stream/s\n" +
		"initialPositionInStreamExtended=1700000000\ninitialPositionInStream=at_timestamp\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.InitialPosition.Sequence() != kcl.AtTimestamp || !c.InitialPosition.Timestamp().Equal(time.Unix(1700000000, 0)) {
		t.Errorf("initial position %v", c.InitialPosition)
	}
}

func TestParseCredentials(t *testing.T) {
	for _, tc := range []struct{ in, kind, profile string }{
		{"DefaultAWSCredentialsProviderChain", "default", ""},
		{"software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider", "default", ""},
		{"com.amazonaws.auth.EnvironmentVariableCredentialsProvider", "env", ""},
		{"ProfileCredentialsProvider|prod", "profile", "prod"},
		{"SomethingElse, ProfileCredentialsProvider|dev", "profile", "dev"},
	} {
		c, err := parseCredentials(tc.in)
		if err != nil || c.Kind != tc.kind || c.Profile != tc.profile {
			t.Errorf("parseCredentials(%q) = %+v, %v; want %s %s", tc.in, c, err, tc.kind, tc.profile)
		}
	}
	// The credentials keys are case-insensitive, as in the Java daemon.
	c := &Config{}
	if err := c.Set("awsCredentialsProviderDynamoDB", "EnvironmentVariableCredentialsProvider"); err != nil {
		t.Fatal(err)
	}
	if c.DynamoDBCredentials.Kind != "env" || len(c.Unknown) != 0 {
		t.Errorf("config %+v", c)
	}
}
