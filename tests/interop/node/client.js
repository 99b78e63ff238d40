// Classifies records given as JSON on argv[3] against the sidecar at argv[2]; prints the
// results as JSON. Loads the proto at run time, so it shares no generated code with Python.
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const protoDir = path.resolve(__dirname, "../../../proto");
const definition = protoLoader.loadSync("logclass/v1/classifier.proto", {
  includeDirs: [protoDir], keepCase: true, enums: String, defaults: true,
});
const v1 = grpc.loadPackageDefinition(definition).logclass.v1;
const client = new v1.LogClassifier(process.argv[2], grpc.credentials.createInsecure());
const records = JSON.parse(process.argv[3]);
const deadline = new Date(Date.now() + 20000);

client.Classify({ records, request_id: "node-1" }, { deadline }, (err, response) => {
  if (err) {
    console.error(`Classify failed: ${err.code} ${err.details}`);
    process.exit(1);
  }
  client.GetModelInfo({}, { deadline }, (err2, info) => {
    if (err2) {
      console.error(`GetModelInfo failed: ${err2.code} ${err2.details}`);
      process.exit(1);
    }
    console.log(JSON.stringify({ response, info }));
    client.close();
  });
});
