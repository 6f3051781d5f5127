package lease

import (
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/shardline/shardline/internal/ddbcost"
)

// DynamoDBAPI is the part of the DynamoDB client the lease table uses. A
// *dynamodb.Client satisfies it; tests wrap it to inject faults, and
// ddbcost.Client to count the capacity it consumes.
type DynamoDBAPI = ddbcost.API

var _ DynamoDBAPI = (*dynamodb.Client)(nil)
