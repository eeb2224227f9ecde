// pgjdbc client for the driver conformance lab: JSON lines in on stdin, JSON lines out on
// stdout (see tests/drivers/clients for the protocol). Java cannot change its own
// environment, so each request's "env" is ignored.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.FutureTask;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.regex.Pattern;

public final class Client {
  private static final long GRACE_MS = 2000; // hard wall-clock limit is timeout_ms + GRACE_MS
  private static final Pattern HAS_USER = Pattern.compile("[?&]user=");

  public static void main(String[] args) throws Exception {
    // Read at run time by reflection: the field is a compile-time constant that javac
    // would otherwise inline, reporting the jar we compiled against, not the one loaded.
    String version = (String) Class.forName("org.postgresql.util.DriverInfo").getField("DRIVER_VERSION").get(null);
    emit("{\"ready\":true,\"driver\":\"pgjdbc\",\"version\":" + quote("pgjdbc " + version) + "}");
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    for (String line; (line = in.readLine()) != null; ) {
      if (line.isBlank()) continue;
      Object id = null;
      String error;
      try {
        Map<?, ?> req = (Map<?, ?>) new Json(line).value();
        id = req.get("id");
        error = attempt((String) req.get("target"), (String) req.get("user"), ((Number) req.get("timeout_ms")).longValue());
      } catch (Throwable t) {
        error = oneLine(t);
      }
      emit("{\"id\":" + (id == null ? "null" : quote(id.toString())) + ",\"ok\":" + (error == null)
          + ",\"error\":" + quote(error == null ? "" : error) + "}");
    }
    System.exit(0); // an abandoned attempt thread must not keep the JVM alive
  }

  /** Returns null on success, else the error message. */
  static String attempt(String target, String user, long timeoutMs) throws InterruptedException {
    Properties props = new Properties();
    if (!HAS_USER.matcher(target).find()) props.setProperty("user", user);
    // Not DriverManager.setLoginTimeout: pgjdbc 42.5.5 ignores it because its own
    // loginTimeout property defaults to "0". A loginTimeout in the URL still wins over this.
    props.setProperty("loginTimeout", String.valueOf(timeoutMs / 1000.0));
    FutureTask<Void> task = new FutureTask<>(() -> {
      try (Connection c = DriverManager.getConnection(target, props)) {
        return null;
      }
    });
    Thread thread = new Thread(task, "attempt");
    thread.setDaemon(true);
    thread.start();
    try {
      task.get(timeoutMs + GRACE_MS, TimeUnit.MILLISECONDS);
      return null;
    } catch (ExecutionException e) {
      return oneLine(e.getCause());
    } catch (TimeoutException e) {
      task.cancel(true);
      return "hard timeout: attempt abandoned";
    }
  }

  static String oneLine(Throwable t) {
    String text = (t.getClass().getSimpleName() + ": " + t.getMessage()).trim().replaceAll("\\s+", " ");
    return text.length() > 300 ? text.substring(0, 300) : text;
  }

  static void emit(String line) {
    System.out.println(line);
    System.out.flush();
  }

  static String quote(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') b.append('\\').append(c);
      else if (c < 0x20 || c == 0x2028 || c == 0x2029) b.append(String.format("\\u%04x", (int) c));
      else b.append(c);
    }
    return b.append('"').toString();
  }

  /** Minimal JSON reader (no JSON library ships with the JDK): objects, arrays, strings, numbers, literals. */
  static final class Json {
    private final String s;
    private int i;

    Json(String s) {
      this.s = s;
    }

    Object value() {
      skipWs();
      char c = s.charAt(i);
      if (c == '{') {
        Map<String, Object> map = new LinkedHashMap<>();
        i++;
        skipWs();
        if (s.charAt(i) == '}') { i++; return map; }
        do {
          skipWs();
          String key = string();
          skipWs();
          expect(':');
          map.put(key, value());
          skipWs();
        } while (s.charAt(i++) == ',');
        if (s.charAt(i - 1) != '}') throw new IllegalArgumentException("bad JSON object at " + i);
        return map;
      }
      if (c == '[') {
        java.util.List<Object> list = new java.util.ArrayList<>();
        i++;
        skipWs();
        if (s.charAt(i) == ']') { i++; return list; }
        do {
          list.add(value());
          skipWs();
        } while (s.charAt(i++) == ',');
        if (s.charAt(i - 1) != ']') throw new IllegalArgumentException("bad JSON array at " + i);
        return list;
      }
      if (c == '"') return string();
      for (String lit : new String[] {"true", "false", "null"}) {
        if (s.startsWith(lit, i)) {
          i += lit.length();
          return lit.equals("null") ? null : Boolean.valueOf(lit);
        }
      }
      int start = i;
      while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) i++;
      if (start == i) throw new IllegalArgumentException("bad JSON value at " + i);
      return Double.valueOf(s.substring(start, i));
    }

    private String string() {
      expect('"');
      StringBuilder b = new StringBuilder();
      for (char c; (c = s.charAt(i++)) != '"'; ) {
        if (c != '\\') { b.append(c); continue; }
        c = s.charAt(i++);
        switch (c) {
          case 'b': b.append('\b'); break;
          case 'f': b.append('\f'); break;
          case 'n': b.append('\n'); break;
          case 'r': b.append('\r'); break;
          case 't': b.append('\t'); break;
          case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
          default: b.append(c); // \" \\ \/
        }
      }
      return b.toString();
    }

    private void expect(char c) {
      if (s.charAt(i++) != c) throw new IllegalArgumentException("expected '" + c + "' at " + (i - 1));
    }

    private void skipWs() {
      while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++;
    }
  }
}
