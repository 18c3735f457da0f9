"""The flags each trtexec release accepts, for checking the trtexec lines edgetool prints (no trtexec runs here).

Every ``"--flag"`` string literal of NVIDIA/TensorRT ``samples/common/sampleOptions.cpp`` (where trtexec
parses its options; trtexec refuses any other as an unknown option), at the commit named beside each
release, as ``git show COMMIT:samples/common/sampleOptions.cpp | grep -o '"--[A-Za-z0-9]*"' | sort -u``
lists them.
"""

FLAGS = {
    # release/8.2 at f5f4e6f2e2eeccce2021283680ed46cdad42350d
    "8.2": frozenset(
        "--allowGPUFallback --avgRuns --avgTiming --batch --best --buildOnly --calib --consistency --deploy "
        "--device --directIO --dumpLayerInfo --dumpOutput --dumpProfile --dumpRefit --duration "
        "--explicitBatch --explicitPrecision --exportLayerInfo --exportOutput --exportProfile --exportTimes "
        "--exposeDMA --fp16 --help --idleTime --inputIOFormats --int8 --iterations --loadEngine --loadInputs "
        "--maxBatch --maxShapes --maxShapesCalib --minShapes --minShapesCalib --minTiming --model "
        "--noBuilderCache --noDataTransfers --noTF32 --nvtxMode --onnx --optShapes --optShapesCalib --output "
        "--outputIOFormats --percentile --plugins --precisionConstraints --profilingVerbosity --refit "
        "--restricted --safe --saveEngine --separateProfileRun --serialized --shapes --sleepTime --sparsity "
        "--streams --tacticSources --threads --timeDeserialize --timeRefit --timingCacheFile --uff --uffInput "
        "--uffNHWC --useCudaGraph --useDLACore --useManagedMemory --useSpinWait --verbose --warmUp "
        "--workspace".split()
    ),
    # release/8.5 at 68b5072fdb9df6b6edab1392b02a705394b2e906
    "8.5": frozenset(
        "--allowGPUFallback --avgRuns --avgTiming --batch --best --buildOnly --calib --consistency --deploy "
        "--device --directIO --dumpLayerInfo --dumpOutput --dumpProfile --dumpRefit --duration "
        "--explicitBatch --explicitPrecision --exportLayerInfo --exportOutput --exportProfile --exportTimes "
        "--exposeDMA --fp16 --help --heuristic --idleTime --inputIOFormats --int8 --iterations "
        "--layerOutputTypes --layerPrecisions --loadEngine --loadInputs --maxBatch --maxShapes "
        "--maxShapesCalib --memPoolSize --minShapes --minShapesCalib --minTiming --model --noBuilderCache "
        "--noDataTransfers --noTF32 --nvtxMode --onnx --optShapes --optShapesCalib --output --outputIOFormats "
        "--percentile --persistentCacheRatio --plugins --precisionConstraints --preview --profilingVerbosity "
        "--refit --restricted --safe --saveEngine --separateProfileRun --serialized --shapes --sleepTime "
        "--sparsity --std --streams --tacticSources --threads --timeDeserialize --timeRefit --timingCacheFile "
        "--uff --uffInput --uffNHWC --useCudaGraph --useDLACore --useManagedMemory --useSpinWait --verbose "
        "--warmUp --workspace".split()
    ),
    # v8.6.1 at a25ca8bba2a164179046afc2f5d7f478e280f8c0
    "8.6": frozenset(
        "--allowGPUFallback --avgRuns --avgTiming --batch --best --buildDLAStandalone --buildOnly "
        "--builderOptimizationLevel --calib --consistency --deploy --device --directIO --dumpLayerInfo "
        "--dumpOutput --dumpProfile --dumpRawBindingsToFile --dumpRefit --duration --dynamicPlugins "
        "--excludeLeanRuntime --explicitBatch --explicitPrecision --exportLayerInfo --exportOutput "
        "--exportProfile --exportTimes --exposeDMA --fp16 --fp8 --hardwareCompatibilityLevel --help "
        "--heuristic --idleTime --ignoreParsedPluginLibs --infStreams --inputIOFormats --int8 --iterations "
        "--layerDeviceTypes --layerOutputTypes --layerPrecisions --leanDLLPath --loadEngine --loadInputs "
        "--maxAuxStreams --maxBatch --maxShapes --maxShapesCalib --memPoolSize --minShapes --minShapesCalib "
        "--minTiming --model --noBuilderCache --noDataTransfers --noTF32 --nvtxMode --onnx --optShapes "
        "--optShapesCalib --output --outputIOFormats --percentile --persistentCacheRatio --plugins "
        "--precisionConstraints --preview --profilingVerbosity --refit --restricted --safe --saveEngine "
        "--separateProfileRun --serialized --setPluginsToSerialize --shapes --skipInference --sleepTime "
        "--sparsity --staticPlugins --std --streams --tacticSources --tempdir --tempfileControls --threads "
        "--timeDeserialize --timeRefit --timingCacheFile --uff --uffInput --uffNHWC --useCudaGraph "
        "--useDLACore --useManagedMemory --useRuntime --useSpinWait --vc --verbose --versionCompatible "
        "--warmUp --workspace".split()
    ),
    # v10.3.0 at c5b9de37f7ef9034e2efc621c664145c7c12436e
    "10.3": frozenset(
        "--allocationStrategy --allowGPUFallback --allowWeightStreaming --avgRuns --avgTiming --best --bf16 "
        "--buildDLAStandalone --builderOptimizationLevel --calib --calibProfile --consistency --device "
        "--directIO --dumpLayerInfo --dumpOptimizationProfile --dumpOutput --dumpProfile "
        "--dumpRawBindingsToFile --dumpRefit --duration --dynamicPlugins --errorOnTimingCacheMiss "
        "--excludeLeanRuntime --exportLayerInfo --exportOutput --exportProfile --exportTimes --exposeDMA "
        "--fp16 --fp8 --getPlanVersionOnly --hardwareCompatibilityLevel --help --idleTime "
        "--ignoreParsedPluginLibs --infStreams --inputIOFormats --int4 --int8 --iterations --layerDeviceTypes "
        "--layerOutputTypes --layerPrecisions --leanDLLPath --loadEngine --loadInputs --markDebug "
        "--maxAuxStreams --maxShapes --maxShapesCalib --memPoolSize --minShapes --minShapesCalib "
        "--noBuilderCache --noCompilationCache --noDataTransfers --noTF32 --onnx --optShapes --optShapesCalib "
        "--outputIOFormats --percentile --persistentCacheRatio --pi --pluginInstanceNorm --plugins "
        "--precisionConstraints --preview --profile --profilingVerbosity --refit --restricted "
        "--runtimePlatform --safe --saveDebugTensors --saveEngine --separateProfileRun --serialized "
        "--setPluginsToSerialize --shapes --skipInference --sleepTime --sparsity --staticPlugins --std "
        "--streams --stripAllWeights --stripWeights --stronglyTyped --tacticSources --tempdir "
        "--tempfileControls --threads --timeDeserialize --timeRefit --timingCacheFile --useCudaGraph "
        "--useDLACore --useManagedMemory --useProfile --useRuntime --useSpinWait --vc --verbose "
        "--versionCompatible --warmUp --weightStreamingBudget --weightless".split()
    ),
    # release/10.13 at b8db91e15be2cae4465ac17fab19e0f969e45407
    "10.13": frozenset(
        "--allocationStrategy --allowGPUFallback --allowWeightStreaming --asyncFileReader --avgRuns "
        "--avgTiming --best --bf16 --buildDLAStandalone --builderOptimizationLevel --calib --calibProfile "
        "--consistency --device --directIO --distributiveIndependence --dumpKernelText --dumpLayerInfo "
        "--dumpOptimizationProfile --dumpOutput --dumpProfile --dumpRawBindingsToFile --dumpRefit --duration "
        "--dynamicPlugins --errorOnTimingCacheMiss --excludeLeanRuntime --exportLayerInfo --exportOutput "
        "--exportProfile --exportTimes --exposeDMA --fp16 --fp8 --getPlanVersionOnly "
        "--hardwareCompatibilityLevel --help --idleTime --ignoreParsedPluginLibs --infStreams "
        "--inputIOFormats --int4 --int8 --iterations --l2LimitForTiling --layerDeviceTypes --layerOutputTypes "
        "--layerPrecisions --leanDLLPath --loadEngine --loadInputs --markDebug "
        "--markUnfusedTensorsAsDebugTensors --maxAuxStreams --maxShapes --maxShapesCalib --maxTactics "
        "--memPoolSize --minShapes --minShapesCalib --monitorMemory --noBuilderCache --noCompilationCache "
        "--noDataTransfers --noTF32 --onnx --optShapes --optShapesCalib --outputIOFormats --percentile "
        "--persistentCacheRatio --pi --pluginInstanceNorm --plugins --precisionConstraints --preview "
        "--profile --profilingVerbosity --refit --remoteAutoTuningConfig --restricted --runtimePlatform "
        "--safe --safetyPlugins --saveAllDebugTensors --saveDebugTensors --saveEngine --separateProfileRun "
        "--serialized --setPluginsToSerialize --shapes --skipInference --sleepTime --sparsity --staticPlugins "
        "--std --streams --stripAllWeights --stripWeights --stronglyTyped --tacticSources --tempdir "
        "--tempfileControls --threads --tilingOptimizationLevel --timeDeserialize --timeRefit "
        "--timingCacheFile --uint8AsymmetricQuantizationDLA --useCudaGraph --useDLACore --useManagedMemory "
        "--useProfile --useRuntime --useSpinWait --vc --verbose --versionCompatible --warmUp "
        "--weightStreamingBudget --weightless".split()
    ),
    # v10.16 at 52399f555c2f80cb690a4a558b604e1a5f227e7c
    "10.16": frozenset(
        "--adjustForDLA --allocationStrategy --allowGPUFallback --allowWeightStreaming --asyncFileReader "
        "--avgRuns --avgTiming --best --bf16 --buildDLAStandalone --builderOptimizationLevel --calib "
        "--calibProfile --consistency --cpuOnly --decomposableAttentions --device --directIO "
        "--distributiveIndependence --dumpKernelText --dumpLayerInfo --dumpOptimizationProfile --dumpOutput "
        "--dumpProfile --dumpRawBindingsToFile --dumpRefit --duration --dynamicPlugins --enablePluginOverride "
        "--errorOnTimingCacheMiss --excludeLeanRuntime --exportLayerInfo --exportOutput --exportProfile "
        "--exportTimes --exposeDMA --fp16 --fp8 --getPlanVersionOnly --hardwareCompatibilityLevel --help "
        "--idleTime --ignoreParsedPluginLibs --infStreams --inputIOFormats --int4 --int8 --iterations "
        "--l2LimitForTiling --layerDeviceTypes --layerOutputTypes --layerPrecisions --leanDLLPath "
        "--loadEngine --loadInputs --markDebug --markUnfusedTensorsAsDebugTensors --maxAuxStreams --maxShapes "
        "--maxShapesCalib --maxTactics --memPoolSize --minShapes --minShapesCalib --monitorMemory "
        "--noBuilderCache --noCompilationCache --noDataTransfers --noTF32 --onnx --optShapes --optShapesCalib "
        "--outputIOFormats --percentile --persistentCacheRatio --pi --pluginInstanceNorm --plugins "
        "--precisionConstraints --preview --profile --profilingVerbosity --refit --refitFromOnnx "
        "--remoteAutoTuningConfig --reportCapabilityDLA --restricted --runtimePlatform --safe --safetyPlugins "
        "--saveAllDebugTensors --saveDebugTensors --saveEngine --separateProfileRun --serialized "
        "--setPluginsToSerialize --shapes --skipInference --sleepTime --sparsity --staticPlugins --std "
        "--streams --stripAllWeights --stripWeights --stronglyTyped --tacticSources --tempdir "
        "--tempfileControls --threads --tilingOptimizationLevel --timeDeserialize --timeRefit "
        "--timingCacheFile --uint8AsymmetricQuantizationDLA --useCudaGraph --useDLACore --useManagedMemory "
        "--useProfile --useRuntime --useSpinWait --vc --verbose --versionCompatible --warmUp "
        "--weightStreamingBudget --weightless".split()
    ),
    # v11.1 at 82d1dca801c8318a5605399d5240780d0679e4e1
    "11.1": frozenset(
        "--accuracyAlgorithm --accuracyThreshold --adjustForDLA --allocationStrategy --allowGPUFallback "
        "--allowWeightStreaming --asyncFileReader --atol --avgRuns --avgTiming --buildDLAStandalone "
        "--builderOptimizationLevel --consistency --continue --cpuOnly --decomposableAttentions --device "
        "--directIO --distributiveIndependence --dryRun --dumpKernelText --dumpLayerInfo "
        "--dumpOptimizationProfile --dumpOutput --dumpProfile --dumpRawBindingsToFile --dumpRefit --duration "
        "--dynamicPlugins --enablePluginOverride --errorOnTimingCacheMiss --excludeLeanRuntime "
        "--exportLayerInfo --exportOutput --exportProfile --exportTimes --exposeDMA --getPlanVersionOnly "
        "--hardwareCompatibilityLevel --help --helpBuildRoute --idleTime --ignoreParsedPluginLibs "
        "--includeDataTransfers --infStreams --inputIOFormats --int8 --iterations --l2LimitForTiling "
        "--layerDeviceTypes --leanDLLPath --loadEngine --loadInputs --loadRefOutputs --markDebug "
        "--markUnfusedTensorsAsDebugTensors --maxAuxStreams --maxShapes --maxTactics --memPoolSize "
        "--minShapes --monitorMemory --noBuilderCache --noCompilationCache --noCudaGraph --noDataTransfers "
        "--noSpinWait --noTF32 --onnx --optShapes --outputIOFormats --percentile --persistentCacheRatio --pi "
        "--pluginInstanceNorm --plugins --preview --profile --profilingVerbosity --refPair --refit "
        "--refitFromOnnx --remoteAutoTuningConfig --reportCapabilityDLA --rtol --runtimePlatform --safe "
        "--safetyPlugins --saveAllDebugTensors --saveAllEngines --saveDebugTensors --saveEngine "
        "--separateProfileRun --serialized --setBuildRoute --setPluginsToSerialize --shapes --skipInference "
        "--sleepTime --sparsity --staticPlugins --std --streams --stripAllWeights --stripWeights "
        "--stronglyTyped --tacticSources --tempdir --tempfileControls --threads --tilingOptimizationLevel "
        "--timeDeserialize --timeRefit --timingCacheFile --tuneBuildRouteFile --tuneBuildRoutes "
        "--tuningCacheFile --tuningResultFile --tuningSearch --tuningTimeOut --uint8AsymmetricQuantizationDLA "
        "--useCudaGraph --useDLACore --useManagedMemory --useProfile --useRuntime --useSpinWait --vc "
        "--verbose --versionCompatible --warmUp --weightStreamingBudget".split()
    ),
}
