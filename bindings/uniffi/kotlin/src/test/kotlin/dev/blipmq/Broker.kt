package dev.blipmq

import java.io.BufferedReader
import java.io.Closeable
import java.io.File
import java.net.ServerSocket
import java.net.URI
import java.nio.file.Files
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit

/**
 * The real `blipmq` broker binary (system property `blipmq.bin`, set by the
 * pom from scripts/test-kotlin.sh) on 127.0.0.1 port 0, with its own WAL
 * directory; [close] stops it.
 */
class Broker(private val env: Map<String, String> = emptyMap()) : Closeable {
    private val walDir: File = Files.createTempDirectory("blipmq-kotlin-test").toFile()
    private var process: Process
    val addr: String
    private var metricsAddr: String

    init {
        process = start("127.0.0.1:0")
        val fields = readyLine(process.inputStream.bufferedReader())
        addr = fields.getValue("clients")
        metricsAddr = fields.getValue("metrics")
    }

    private fun start(bind: String): Process {
        val binary = System.getProperty("blipmq.bin")
            ?: error("set the system property blipmq.bin to the broker binary (scripts/test-kotlin.sh does)")
        check(File(binary).canExecute()) { "no broker binary at $binary" }
        val builder = ProcessBuilder(binary).redirectError(ProcessBuilder.Redirect.DISCARD)
        builder.environment().putAll(
            mapOf(
                "BLIPMQ_SERVER_BIND_ADDR" to bind,
                "BLIPMQ_METRICS_BIND_ADDR" to "127.0.0.1:0",
                "BLIPMQ_WAL_DIR" to walDir.path,
                "RUST_LOG" to "warn",
            ) + env,
        )
        return builder.start()
    }

    /** Stop the broker (gracefully) and start it again on the same port. */
    fun restart() {
        stop()
        process = start(addr)
        metricsAddr = readyLine(process.inputStream.bufferedReader()).getValue("metrics")
    }

    /** Stop the broker gracefully (SIGTERM), keeping its WAL directory. */
    fun stop() {
        process.destroy()
        if (!process.waitFor(10, TimeUnit.SECONDS)) process.destroyForcibly().waitFor()
    }

    /** The value of an unlabelled metric from `GET /metrics`. */
    fun metric(name: String): Long {
        val text = URI("http://$metricsAddr/metrics").toURL().readText()
        val line = text.lineSequence().firstOrNull { it.startsWith("$name ") }
            ?: error("no metric $name in /metrics")
        return line.substringAfter(' ').trim().toDouble().toLong()
    }

    /** Wait up to five seconds for [name] to reach [value]. */
    fun awaitMetric(name: String, value: Long) {
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5)
        while (metric(name) != value) {
            check(System.nanoTime() < deadline) { "$name stayed at ${metric(name)}, expected $value" }
            Thread.sleep(20)
        }
    }

    override fun close() {
        stop()
        walDir.deleteRecursively()
    }

    private fun readyLine(stdout: BufferedReader): Map<String, String> {
        // Read on another thread so that a broker that never gets ready fails
        // the test in ten seconds instead of hanging it.
        val executor = Executors.newSingleThreadExecutor()
        try {
            val line = executor.submit<String?> { stdout.readLine() }.get(10, TimeUnit.SECONDS)
            check(line != null && line.startsWith("blipmq ready ")) { "unexpected broker output: $line" }
            return line.split(' ').drop(2).associate { it.substringBefore('=') to it.substringAfter('=') }
        } finally {
            executor.shutdownNow()
        }
    }

    companion object {
        /** An address where nothing listens. */
        fun closedAddr(): String = ServerSocket(0).use { "127.0.0.1:${it.localPort}" }
    }
}
